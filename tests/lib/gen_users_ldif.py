#!/usr/bin/env python3
"""Deterministic LDIF of test users and groups for the OpenLDAP test server.

    gen_users_ldif.py [--users N] [--base dc=example,dc=org] [--offline]

Writes to stdout, streaming: memory does not grow with N, so 100k users is fine.
The same N always gives the same entries (no randomness, no clock):

- N staff users `uid=userNNNNNN,ou=Staff,<base>` (i = 1..N, six digits), and
  CONTRACTORS contractors `uid=cNNNN,ou=Contractors,<base>`; inetOrgPerson +
  posixAccount with cn, sn, givenName, displayName, mail, ou, departmentNumber,
  employeeType, employeeNumber, uidNumber.
- Staff user i is disabled (pwdAccountLockedTime: 000001010000Z, ppolicy's
  "locked until an administrator unlocks") when i % 33 == 7: about 3%.
  Contractor 3 is disabled too.
- Groups (groupOfNames) under ou=Groups: one per department (engineering, sales,
  finance, support, marketing, hr) holding that department's staff; `admins`
  (staff users 1-5); `contractors` (all contractors); `backup-users`, whose
  members are the group `admins` and user 6 (a nested group; OpenLDAP's
  memberof overlay does not follow nesting, AD's matching rule does).

--offline is for slapadd: entries also carry the operational attributes the
server would otherwise create: entryUUID (a UUIDv5 of the DN, so anchors are
repeatable) and memberOf (the memberof overlay does not run under slapadd).
Without it the output suits ldapadd, and the overlay maintains memberOf.
"""

import argparse
import base64
import sys
import uuid

DEPARTMENTS = [
    # (ou, departmentNumber, group cn)
    ("Engineering", "ENG", "engineering"),
    ("Sales", "SAL", "sales"),
    ("Finance", "FIN", "finance"),
    ("Support", "SUP", "support"),
    ("Marketing", "MKT", "marketing"),
    ("Human Resources", "HR", "hr"),
]
GIVEN = [
    "Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan",
    "Judy", "Karl", "Laura", "Mallory", "Niaj", "Olivia", "Peggy", "Quentin",
    "Rupert", "Sybil", "Trent", "Ursula", "Victor", "Walter", "Xena", "Yusuf",
    "Zoe", "Amir", "Bea", "Chen", "Dmitri", "Elif", "Farah", "Goran", "Hana",
    "Ines", "Jonas", "Kemal", "Lena", "Mateo", "Noor", "Oskar",
]
SURNAMES = [
    "Smith", "Jones", "Garcia", "Müller", "Nakamura", "Okafor", "Novak",
    "Rossi", "Kowalski", "Andersen", "Dubois", "Silva", "Ivanova", "Haddad",
    "O'Brien", "Nguyen", "Fischer", "Costa", "Lindqvist", "Petrov", "Kaya",
    "Moreau", "Jensen", "Tanaka", "Horvath", "Mensah", "Byrne", "Lopez",
    "Virtanen", "Schmidt", "Popescu",
]
CONTRACTORS = 10
LOCKED = "000001010000Z"
UUID_NS = uuid.UUID("6f1d3c9a-52b4-4f0e-9a57-0d6c2f3b8e11")  # arbitrary, fixed


def staff_disabled(i):
    return i % 33 == 7


def staff_department(i):
    return DEPARTMENTS[(i * 7) % len(DEPARTMENTS)]


def ldif_value(attr, value):
    """attr: value, or attr:: base64 when LDIF (RFC 2849) requires it."""
    raw = value.encode("utf-8")
    safe = all(0x20 <= b < 0x7F for b in raw) and not value.startswith((" ", ":", "<")) \
        and not value.endswith(" ")
    if safe:
        return f"{attr}: {value}\n"
    return f"{attr}:: {base64.b64encode(raw).decode('ascii')}\n"


class Writer:
    def __init__(self, out, base, offline):
        self.out = out
        self.base = base
        self.offline = offline

    def entry(self, dn, attrs):
        buf = [ldif_value("dn", dn)]
        for attr, value in attrs:
            buf.append(ldif_value(attr, value))
        if self.offline:
            buf.append(f"entryUUID: {uuid.uuid5(UUID_NS, dn.lower())}\n")
        buf.append("\n")
        self.out.write("".join(buf))

    def person(self, dn, uid, number, given, sn, dept, employee_type, disabled, groups):
        ou, dept_no, _ = dept
        attrs = [
            ("objectClass", "inetOrgPerson"),
            ("objectClass", "posixAccount"),
            ("uid", uid),
            ("cn", f"{given} {sn}"),
            ("sn", sn),
            ("givenName", given),
            ("displayName", f"{given} {sn}"),
            ("mail", f"{uid}@example.org"),
            ("ou", ou),
            ("departmentNumber", dept_no),
            ("employeeType", employee_type),
            ("employeeNumber", str(number)),
            ("uidNumber", str(number)),
            ("gidNumber", "100000"),
            ("homeDirectory", f"/home/{uid}"),
            ("loginShell", "/bin/bash"),
        ]
        if disabled:
            attrs.append(("pwdAccountLockedTime", LOCKED))
        if self.offline:
            attrs.extend(("memberOf", g) for g in groups)
        self.entry(dn, attrs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--base", default="dc=example,dc=org")
    parser.add_argument("--offline", action="store_true",
                        help="add entryUUID and memberOf, for slapadd")
    args = parser.parse_args()
    if args.users < 6:
        parser.error("--users must be at least 6 (the small groups name users 1-6)")

    base, n = args.base, args.users
    w = Writer(sys.stdout, base, args.offline)
    staff = f"ou=Staff,{base}"
    contractors = f"ou=Contractors,{base}"
    groups = f"ou=Groups,{base}"

    def staff_dn(i):
        return f"uid=user{i:06d},{staff}"

    def contractor_dn(j):
        return f"uid=c{j:04d},{contractors}"

    def group_dn(name):
        return f"cn={name},{groups}"

    for i in range(1, n + 1):
        dept = staff_department(i)
        member_of = [group_dn(dept[2])]
        if i <= 5:
            member_of.append(group_dn("admins"))
        if i == 6:
            member_of.append(group_dn("backup-users"))
        w.person(
            staff_dn(i), f"user{i:06d}", 100000 + i,
            GIVEN[i % len(GIVEN)], SURNAMES[(i * 17) % len(SURNAMES)],
            dept, "Intern" if i % 50 == 0 else "Employee", staff_disabled(i), member_of,
        )
    for j in range(1, CONTRACTORS + 1):
        w.person(
            contractor_dn(j), f"c{j:04d}", 900000 + j,
            GIVEN[(j * 5) % len(GIVEN)], SURNAMES[(j * 3) % len(SURNAMES)],
            DEPARTMENTS[0], "Contractor", j == 3, [group_dn("contractors")],
        )

    def group(name, description, members, member_of=()):
        attrs = [("objectClass", "groupOfNames"), ("cn", name), ("description", description)]
        attrs.extend(("member", m) for m in members)
        if args.offline:
            attrs.extend(("memberOf", g) for g in member_of)
        w.entry(group_dn(name), attrs)

    for ou, _, cn in DEPARTMENTS:
        members = (staff_dn(i) for i in range(1, n + 1) if staff_department(i)[2] == cn)
        group(cn, f"All staff in {ou}", members)
    group("admins", "Administrators", (staff_dn(i) for i in range(1, 6)),
          member_of=[group_dn("backup-users")])
    group("contractors", "All contractors",
          (contractor_dn(j) for j in range(1, CONTRACTORS + 1)))
    group("backup-users", "Nested: the admins group plus user000006",
          [group_dn("admins"), staff_dn(6)])


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        sys.exit(1)
