#!/usr/bin/python3
"""Writes test objects straight into a private Samba AD DC's sam.ldb.

Run with Debian's /usr/bin/python3 (the samba bindings live there), by
tests/samba.sh; works whether or not the DC is running (ldb locks the files).

    samba_dir.py SMB_CONF init SVC_PASSWORD_FILE
        OU=Service, OU=Staff, OU=Groups; the service account
        CN=svc-usersync,OU=Service with the password in the file; passwords
        never expire (a cached template must not age out).
    samba_dir.py SMB_CONF seed N
        Replace what is under OU=Staff and OU=Groups with N users and the
        groups described in gen_users_ldif.py (same names, departments and
        disabled set as the OpenLDAP seed), AD style: CN=userNNNNNN,OU=Staff,
        sAMAccountName userNNNNNN, userPrincipalName userNNNNNN@<realm>,
        userAccountControl 512, or 514 (ACCOUNTDISABLE) for the disabled ones;
        groups are global security groups; "Backup Users" holds the group
        "admins" and user000006 (nested membership). Users get no password.
"""

import os
import sys

import ldb
from samba.auth import system_session
from samba.param import LoadParm
from samba.samdb import SamDB

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_users_ldif as gen  # noqa: E402  (shared names, departments, disabled set)

UF_NORMAL_ACCOUNT = 0x200
UF_ACCOUNTDISABLE = 0x2
GROUP_GLOBAL_SECURITY = "-2147483646"  # GROUP_TYPE_ACCOUNT_GROUP | GROUP_TYPE_SECURITY_ENABLED


def open_db(conf):
    lp = LoadParm()
    lp.load(conf)
    return SamDB(url=lp.private_path("sam.ldb"), session_info=system_session(), lp=lp), lp


def ensure_ou(db, dn):
    try:
        db.add({"dn": dn, "objectClass": "organizationalUnit"})
    except ldb.LdbError as e:
        if e.args[0] != ldb.ERR_ENTRY_ALREADY_EXISTS:
            raise


def init(conf, pw_file):
    db, _ = open_db(conf)
    base = str(db.domain_dn())
    for ou in ("Service", "Staff", "Groups"):
        ensure_ou(db, f"OU={ou},{base}")
    with open(pw_file, encoding="utf-8") as f:
        password = f.read().strip()
    db.newuser("svc-usersync", password, userou="OU=Service",
               givenname="usersync", surname="service")
    db.setexpiry("(sAMAccountName=svc-usersync)", 0, no_expiry_req=True)
    # maxPwdAge 0: no password expires, so a template cached for months still binds.
    m = ldb.Message(ldb.Dn(db, base))
    m["maxPwdAge"] = ldb.MessageElement("0", ldb.FLAG_MOD_REPLACE, "maxPwdAge")
    db.modify(m)


def clear_below(db, dn):
    try:
        res = db.search(dn, scope=ldb.SCOPE_ONELEVEL, attrs=["dn"])
    except ldb.LdbError as e:
        if e.args[0] == ldb.ERR_NO_SUCH_OBJECT:
            return
        raise
    for r in res:
        db.delete(r.dn, ["tree_delete:1"])


def seed(conf, n):
    db, lp = open_db(conf)
    base = str(db.domain_dn())
    realm = lp.get("realm").lower()
    staff, groups = f"OU=Staff,{base}", f"OU=Groups,{base}"
    ensure_ou(db, staff)
    ensure_ou(db, groups)

    def user_dn(i):
        return f"CN=user{i:06d},{staff}"

    def group_dn(name):
        return f"CN={name},{groups}"

    db.transaction_start()
    try:
        clear_below(db, staff)
        clear_below(db, groups)
        for i in range(1, n + 1):
            ou, _, _ = gen.staff_department(i)
            given = gen.GIVEN[i % len(gen.GIVEN)]
            sn = gen.SURNAMES[(i * 17) % len(gen.SURNAMES)]
            uac = UF_NORMAL_ACCOUNT | (UF_ACCOUNTDISABLE if gen.staff_disabled(i) else 0)
            db.add({
                "dn": user_dn(i),
                "objectClass": "user",
                "sAMAccountName": f"user{i:06d}",
                "userPrincipalName": f"user{i:06d}@{realm}",
                "givenName": given,
                "sn": sn,
                "displayName": f"{given} {sn}",
                "mail": f"user{i:06d}@{realm}",
                "department": ou,
                "employeeID": str(100000 + i),
                "employeeType": "Intern" if i % 50 == 0 else "Employee",
                "userAccountControl": str(uac),
            })

        def group(name, description, members):
            msg = {"dn": group_dn(name), "objectClass": "group", "sAMAccountName": name,
                   "groupType": GROUP_GLOBAL_SECURITY, "description": description}
            members = list(members)
            if members:
                msg["member"] = members
            db.add(msg)

        for ou, _, cn in gen.DEPARTMENTS:
            group(cn, f"All staff in {ou}",
                  (user_dn(i) for i in range(1, n + 1) if gen.staff_department(i)[2] == cn))
        group("admins", "Administrators", (user_dn(i) for i in range(1, min(n, 5) + 1)))
        group("Backup Users", "Nested: the admins group plus user000006",
              [group_dn("admins")] + ([user_dn(6)] if n >= 6 else []))
    except BaseException:
        db.transaction_cancel()
        raise
    db.transaction_commit()


def main():
    if len(sys.argv) != 4 or sys.argv[2] not in ("init", "seed"):
        sys.exit(__doc__)
    conf, cmd, arg = sys.argv[1:]
    if cmd == "init":
        init(conf, arg)
    else:
        seed(conf, int(arg))


if __name__ == "__main__":
    main()
