//! Bounded reads on LDAP (DESIGN §3): a broken or hostile LDAP server cannot
//! exhaust the operator. Each test runs a full read against a tiny LDAP
//! server of its own on 127.0.0.1, speaking just enough of the protocol (BER
//! over TCP, RFC 4511, and the paged-results control of RFC 2696) to
//! misbehave in one way: paging cookies that go round in a cycle, pages or
//! entries without end, an entry of megabytes. Each read fails with its named
//! error, and the fake shows that the read stopped.

mod peak_memory;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use usersync::directory::ldap::{Flavor, IncrementalSource, LdapError, LdapScope, LdapSettings};

use peak_memory::peak_rss_mib;

const BASE_DN: &str = "dc=example,dc=org";
const PAGED_RESULTS_OID: &str = "1.2.840.113556.1.4.319";

// --- BER, as much as the fake needs ---

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = tlv_header(tag, content.len());
    out.extend_from_slice(content);
    out
}

/// The tag and length of an element whose content is `len` bytes.
fn tlv_header(tag: u8, len: usize) -> Vec<u8> {
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out
}

/// The bytes of an entry (`uid=huge`) up to its `uid` value of `size` bytes, which
/// the caller then sends in chunks: the fake never holds the value whole.
fn huge_entry_head(id: i64, size: usize) -> Vec<u8> {
    let dn = octets(format!("uid=huge,{BASE_DN}").as_bytes());
    let uuid = {
        let mut a = octets(b"entryUUID");
        a.extend(tlv(0x31, &octets(b"00000000-0000-4000-8000-000000000001")));
        tlv(0x30, &a)
    };
    let value = tlv_header(0x04, size);
    let set = tlv_header(0x31, value.len() + size);
    let name = octets(b"uid");
    let attribute_len = name.len() + set.len() + value.len() + size;
    let attribute = tlv_header(0x30, attribute_len);
    let list_len = uuid.len() + attribute.len() + attribute_len;
    let list = tlv_header(0x30, list_len);
    let op_len = dn.len() + list.len() + list_len;
    let op = tlv_header(0x64, op_len);
    let id = integer(id);
    let mut head = tlv_header(0x30, id.len() + op.len() + op_len);
    for part in [id, op, dn, list, uuid, attribute, name, set, value] {
        head.extend(part);
    }
    head
}

fn integer(n: i64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let mut start = 0;
    while start < 7
        && ((bytes[start] == 0 && bytes[start + 1] < 0x80)
            || (bytes[start] == 0xFF && bytes[start + 1] >= 0x80))
    {
        start += 1;
    }
    tlv(0x02, &bytes[start..])
}

fn octets(value: &[u8]) -> Vec<u8> {
    tlv(0x04, value)
}

fn message(id: i64, op: Vec<u8>, controls: Option<Vec<u8>>) -> Vec<u8> {
    let mut content = integer(id);
    content.extend(op);
    if let Some(controls) = controls {
        content.extend(tlv(0xA0, &controls));
    }
    tlv(0x30, &content)
}

/// A SearchResultEntry with one value per attribute.
fn entry(id: i64, dn: &str, attributes: &[(&str, &[u8])]) -> Vec<u8> {
    let mut list = Vec::new();
    for (name, value) in attributes {
        let mut attribute = octets(name.as_bytes());
        attribute.extend(tlv(0x31, &octets(value)));
        list.extend(tlv(0x30, &attribute));
    }
    let mut op = octets(dn.as_bytes());
    op.extend(tlv(0x30, &list));
    message(id, tlv(0x64, &op), None)
}

/// A user entry whose anchor (entryUUID) is made from `n`.
fn user(id: i64, n: u64) -> Vec<u8> {
    let uuid = format!("00000000-0000-4000-8000-{n:012}");
    let uid = format!("user{n}");
    entry(
        id,
        &format!("uid={uid},{BASE_DN}"),
        &[("entryUUID", uuid.as_bytes()), ("uid", uid.as_bytes())],
    )
}

/// A successful SearchResultDone carrying a paged-results cookie.
fn done(id: i64, cookie: &[u8]) -> Vec<u8> {
    let mut result = tlv(0x0A, &[0]);
    result.extend(octets(b""));
    result.extend(octets(b""));
    let mut value = integer(0);
    value.extend(octets(cookie));
    let mut control = octets(PAGED_RESULTS_OID.as_bytes());
    control.extend(octets(&tlv(0x30, &value)));
    message(id, tlv(0x65, &result), Some(tlv(0x30, &control)))
}

/// One element: its tag, its content, and what follows it; `None` while
/// incomplete.
fn read_tlv(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *buf.first()?;
    let first = *buf.get(1)?;
    let (len, header) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7F) as usize;
        let bytes = buf.get(2..2 + n)?;
        (
            bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize),
            2 + n,
        )
    };
    let content = buf.get(header..header + len)?;
    Some((tag, content, &buf[header + len..]))
}

/// The elements of a constructed content, in order.
fn elements(mut content: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    while let Some((tag, inner, rest)) = read_tlv(content) {
        out.push((tag, inner));
        content = rest;
    }
    out
}

/// A request: its message id, its operation's tag, and the paged-results
/// cookie it carries (empty when none).
struct Request {
    id: i64,
    op: u8,
    cookie: Vec<u8>,
}

fn parse_request(content: &[u8]) -> Request {
    let parts = elements(content);
    let id = parts[0]
        .1
        .iter()
        .fold(0i64, |acc, b| (acc << 8) | *b as i64);
    let op = parts[1].0;
    let mut cookie = Vec::new();
    if let Some((0xA0, controls)) = parts.get(2).copied() {
        for (_, control) in elements(controls) {
            let fields = elements(control);
            if fields[0].1 == PAGED_RESULTS_OID.as_bytes() {
                let value = fields.last().unwrap().1;
                let (_, paging, _) = read_tlv(value).unwrap();
                cookie = elements(paging)[1].1.to_vec();
            }
        }
    }
    Request { id, op, cookie }
}

// --- the fake server ---

#[derive(Clone, Copy)]
enum Misbehaviour {
    /// Three pages as a server should: cookies `p1`, `p2`, then the end.
    Honest,
    /// Three pages with one cookie for all of them, as Samba pages: `ctx`,
    /// `ctx`, then the end.
    OneCookieForAllPages,
    /// Pages `""` → `A` → `B` → `A` …, each page the same whenever its
    /// cookie is sent: the pages go round in a cycle.
    CookieCycle,
    /// Ten entries a page, and always a new cookie.
    EndlessPages,
    /// One search whose entries never end (and no SearchResultDone).
    EndlessEntries,
    /// One entry with a value of this many bytes.
    HugeEntry(usize),
    /// As `Honest`, but it never lets a connection go: not on an unbind, not
    /// when the client closes its side.
    NeverCloses,
}

struct Fake {
    misbehaviour: Misbehaviour,
    port: u16,
    searches: AtomicU64,
    entries: AtomicU64,
}

async fn start(misbehaviour: Misbehaviour) -> Arc<Fake> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake = Arc::new(Fake {
        misbehaviour,
        port: listener.local_addr().unwrap().port(),
        searches: AtomicU64::new(0),
        entries: AtomicU64::new(0),
    });
    let server = fake.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(server.clone(), socket));
        }
    });
    fake
}

async fn serve(fake: Arc<Fake>, mut socket: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some((0x30, content, rest)) = read_tlv(&buf) {
            let request = parse_request(content);
            let consumed = buf.len() - rest.len();
            // An UnbindRequest ends the session; a SearchRequest is answered
            // (until the client goes away); anything else is ignored.
            let holds = matches!(fake.misbehaviour, Misbehaviour::NeverCloses);
            let ended = match request.op {
                0x42 => !holds,
                0x63 => answer(&fake, &mut socket, &request).await.is_err(),
                _ => false,
            };
            if ended {
                return;
            }
            buf.drain(..consumed);
        }
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) if matches!(fake.misbehaviour, Misbehaviour::NeverCloses) => {
                // Keep the socket open, and silent, for as long as the test runs.
                std::future::pending::<()>().await;
            }
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Sockets of this process connected to `port` (of the peer) that the process
/// still holds: an orphaned socket, closed by its owner and only lingering in
/// the kernel, has inode 0 in /proc/net/tcp.
fn held_connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port = fields[2].rsplit(':').next().unwrap_or_default();
            u16::from_str_radix(remote_port, 16) == Ok(port) && fields[9] != "0"
        })
        .count()
}

async fn answer(fake: &Fake, socket: &mut TcpStream, request: &Request) -> std::io::Result<()> {
    let page = fake.searches.fetch_add(1, Ordering::SeqCst);
    let id = request.id;
    // New users, numbered on from the last one sent.
    let send_users = async |socket: &mut TcpStream, count: u64| -> std::io::Result<()> {
        for _ in 0..count {
            let n = fake.entries.fetch_add(1, Ordering::SeqCst);
            socket.write_all(&user(id, n)).await?;
        }
        Ok(())
    };
    // Users `first..first + count`, the same ones whenever asked.
    let send_range =
        async |socket: &mut TcpStream, first: u64, count: u64| -> std::io::Result<()> {
            for n in first..first + count {
                fake.entries.fetch_add(1, Ordering::SeqCst);
                socket.write_all(&user(id, n)).await?;
            }
            Ok(())
        };
    match fake.misbehaviour {
        Misbehaviour::Honest | Misbehaviour::NeverCloses => {
            send_users(socket, 5).await?;
            let next: &[u8] = match request.cookie.as_slice() {
                b"" => b"p1",
                b"p1" => b"p2",
                _ => b"",
            };
            socket.write_all(&done(id, next)).await
        }
        Misbehaviour::OneCookieForAllPages => {
            send_users(socket, 5).await?;
            let next: &[u8] = if page < 2 { b"ctx" } else { b"" };
            socket.write_all(&done(id, next)).await
        }
        Misbehaviour::CookieCycle => {
            let (first, next): (u64, &[u8]) = match request.cookie.as_slice() {
                b"" => (0, b"A"),
                b"A" => (5, b"B"),
                _ => (10, b"A"),
            };
            send_range(socket, first, 5).await?;
            socket.write_all(&done(id, next)).await
        }
        Misbehaviour::EndlessPages => {
            send_users(socket, 10).await?;
            socket
                .write_all(&done(id, format!("page{}", page + 1).as_bytes()))
                .await
        }
        Misbehaviour::EndlessEntries => loop {
            send_users(socket, 100).await?;
        },
        Misbehaviour::HugeEntry(size) => {
            socket.write_all(&huge_entry_head(id, size)).await?;
            let chunk = vec![b'x'; 64 * 1024];
            let mut left = size;
            while left > 0 {
                let n = left.min(chunk.len());
                socket.write_all(&chunk[..n]).await?;
                left -= n;
            }
            fake.entries.fetch_add(1, Ordering::SeqCst);
            socket.write_all(&done(id, b"")).await
        }
    }
}

// --- the tests ---

fn source(fake: &Fake, max_entries: u64) -> IncrementalSource {
    let mut settings =
        LdapSettings::new(format!("ldap://127.0.0.1:{}", fake.port), Flavor::Generic);
    settings.anchor_attribute = Some("entryUUID".into());
    settings.page_size = 10;
    settings.timeout = Duration::from_secs(5);
    settings.max_entries = max_entries;
    IncrementalSource::new(&settings).unwrap()
}

async fn full_read(fake: &Fake, max_entries: u64) -> Result<u64, LdapError> {
    let read = tokio::time::timeout(
        Duration::from_secs(30),
        source(fake, max_entries).read_full_with_cursor(&LdapScope::new(BASE_DN), Timestamp::now()),
    )
    .await
    .expect("the read never ended")?;
    Ok(read.0.view.entries.len() as u64)
}

/// Wait a moment and check that the fake saw and sent nothing more.
async fn assert_stopped(fake: &Fake) -> (u64, u64) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = (
        fake.searches.load(Ordering::SeqCst),
        fake.entries.load(Ordering::SeqCst),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        (
            fake.searches.load(Ordering::SeqCst),
            fake.entries.load(Ordering::SeqCst)
        ),
        seen,
        "the search went on"
    );
    seen
}

#[tokio::test]
async fn a_finished_session_lets_go_of_a_server_that_never_closes() {
    let fake = start(Misbehaviour::NeverCloses).await;
    for _ in 0..10 {
        assert_eq!(full_read(&fake, 1000).await.unwrap(), 15);
    }
    // The fake holds its ends open; the operator holds none of its own.
    let mut held = usize::MAX;
    for _ in 0..50 {
        held = held_connections_to(fake.port);
        if held == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        held, 0,
        "connections to the server still held after the sessions ended"
    );
}

#[tokio::test]
async fn pages_are_followed_cookie_by_cookie_to_the_end() {
    let fake = start(Misbehaviour::Honest).await;

    let users = full_read(&fake, 1000).await.unwrap();

    assert_eq!(users, 15);
    assert_eq!(fake.searches.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn one_cookie_for_every_page_is_no_cycle_while_the_pages_differ() {
    let fake = start(Misbehaviour::OneCookieForAllPages).await;

    let users = full_read(&fake, 1000).await.unwrap();

    assert_eq!(users, 15);
    assert_eq!(fake.searches.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_paging_cookie_the_search_already_used_after_the_same_page_fails_the_read() {
    let fake = start(Misbehaviour::CookieCycle).await;

    let error = full_read(&fake, 1000).await.unwrap_err();

    assert!(
        matches!(&error, LdapError::CookieRepeated { base_dn, pages: 4, .. } if base_dn == BASE_DN),
        "{error:?}"
    );
    assert_eq!(error.reason(), "CookieRepeated");
    assert!(error.to_string().contains("cycle"), "{error}");
    // Pages "", A, B and A again, which ends in B again: nothing more is asked for.
    let (searches, _) = assert_stopped(&fake).await;
    assert_eq!(searches, 4);
}

#[tokio::test]
async fn endless_pages_fail_the_read_at_the_entry_limit() {
    let fake = start(Misbehaviour::EndlessPages).await;

    let error = full_read(&fake, 1000).await.unwrap_err();

    assert!(
        matches!(&error, LdapError::EntryLimitExceeded { limit: 1000, .. }),
        "{error:?}"
    );
    assert_eq!(error.reason(), "EntryLimitExceeded");
    assert!(
        error.to_string().contains("spec.ldap.maxEntries"),
        "{error}"
    );
    // The limit spans the pages: 100 pages of 10, and the 101st is the last asked for.
    let (searches, _) = assert_stopped(&fake).await;
    assert_eq!(searches, 101);
}

#[tokio::test]
async fn a_search_whose_entries_never_end_fails_at_the_entry_limit() {
    let fake = start(Misbehaviour::EndlessEntries).await;

    let error = full_read(&fake, 5000).await.unwrap_err();

    assert!(
        matches!(&error, LdapError::EntryLimitExceeded { limit: 5000, .. }),
        "{error:?}"
    );
    // The connection is closed: the server cannot send on for ever.
    let (searches, entries) = assert_stopped(&fake).await;
    assert_eq!(searches, 1);
    println!(
        "endless entries, limit 5000: the server got {entries} entries out before the read stopped"
    );
}

#[tokio::test]
async fn an_entry_larger_than_the_cap_fails_the_read() {
    let fake = start(Misbehaviour::HugeEntry(2 * 1024 * 1024)).await;
    let before = peak_rss_mib();

    let error = full_read(&fake, 1000).await.unwrap_err();

    let after = peak_rss_mib();
    // Known whole (it fits the relay's allowance of twice the cap), or stopped
    // on the way: too large either way.
    assert!(
        matches!(&error, LdapError::EntryTooLarge { limit, size, .. } if *limit == 1024 * 1024 && size.is_none_or(|s| s > 2 * 1024 * 1024)),
        "{error:?}"
    );
    assert_eq!(error.reason(), "EntryTooLarge");
    println!(
        "2 MiB entry, cap 1 MiB: peak RSS {} MiB before, {} MiB after",
        before, after
    );
}

#[tokio::test]
async fn an_entry_far_past_the_cap_is_stopped_before_it_is_held_whole() {
    // 256 MiB of one attribute: without the relay, ldap3 would hold all of it.
    let fake = start(Misbehaviour::HugeEntry(256 * 1024 * 1024)).await;
    let before = peak_rss_mib();

    let error = full_read(&fake, 1000).await.unwrap_err();

    let after = peak_rss_mib();
    assert!(
        matches!(&error, LdapError::EntryTooLarge { size: None, .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("more data than the connection lets one message carry"),
        "{error}"
    );
    println!(
        "256 MiB entry, cap 1 MiB: peak RSS {} MiB before, {} MiB after",
        before, after
    );
}

#[tokio::test]
async fn an_entry_of_a_realistic_size_is_read() {
    // 200 KiB, as a large certificate or photo attribute would be.
    let fake = start(Misbehaviour::HugeEntry(200 * 1024)).await;

    assert_eq!(full_read(&fake, 1000).await.unwrap(), 1);
}

#[test]
fn a_zero_entry_limit_is_invalid_config() {
    let mut settings = LdapSettings::new("ldap://127.0.0.1:1", Flavor::OpenLdap);
    settings.max_entries = 0;
    assert!(matches!(
        IncrementalSource::new(&settings),
        Err(LdapError::InvalidConfig(m)) if m.contains("maxEntries")
    ));
}
