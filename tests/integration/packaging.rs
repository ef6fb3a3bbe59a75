//! What the Debian package's unit and files rely on (issue 17): `serve` tells systemd it is
//! ready (`Type=notify`) once DNS answers, over a path or an abstract socket, and a notify
//! socket nobody listens on costs a log line, not the node; the shipped node file
//! (`packaging/node.yaml`) starts a node. Installing the package itself is
//! `packaging/test-deb.sh`'s job (as root; scripts/test.sh runs it).

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use hickory_proto::rr::RecordType;

use crate::ops_support::*;
use crate::support::{manifest_path, query, query_udp};

const ZONE: &str = r#"
zone: api.example.com
soa: { primary: ns1, contact: hostmaster@example.com }
nameservers: { ns1: [192.0.2.53] }
records:
  www: { A: 192.0.2.80 }
"#;

/// Every datagram `socket` receives within `wait`, as text.
fn datagrams(socket: &UnixDatagram, wait: Duration) -> Vec<String> {
    socket
        .set_read_timeout(Some(wait))
        .expect("setting a timeout");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = socket.recv(&mut buf) {
        out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    out
}

/// Starts a node with `NOTIFY_SOCKET=notify`, and checks that `socket` got READY=1, once, and
/// that DNS answered by then (the ready file, which `Node` waits for, is written after every
/// listener is bound and before READY=1 is sent).
fn assert_ready_notified(notify: &str, socket: &UnixDatagram) {
    let node = Node::builder(ZONE).env("NOTIFY_SOCKET", notify).start();
    let got = datagrams(socket, Duration::from_secs(2));
    assert_eq!(got, ["READY=1"], "notifications to {notify}");
    let r = query_udp(node.dns, &query("www.api.example.com", RecordType::A));
    assert_eq!(addresses(&r), ["192.0.2.80"]);
}

#[test]
fn serve_tells_systemd_it_is_ready_once_dns_answers() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).expect("binding the notify socket");
    assert_ready_notified(&path.display().to_string(), &socket);

    // systemd may also name an abstract socket: `@` and the name.
    use std::os::linux::net::SocketAddrExt;
    let name = format!("steerdns-test-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .expect("an abstract address");
    let socket = UnixDatagram::bind_addr(&addr).expect("binding the abstract socket");
    assert_ready_notified(&format!("@{name}"), &socket);
}

#[test]
fn a_notify_socket_nobody_listens_on_is_logged_and_the_node_serves() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let nowhere = dir.path().join("nobody-here");
    let node = Node::builder(ZONE)
        .env("NOTIFY_SOCKET", &nowhere.display().to_string())
        .start();
    wait_until(Duration::from_secs(5), "the warning", || {
        node.stderr().contains("could not notify systemd")
    });
    let r = query_udp(node.dns, &query("www.api.example.com", RecordType::A));
    assert_eq!(addresses(&r), ["192.0.2.80"]);
}

#[test]
fn the_shipped_node_file_starts_a_node() {
    let text = std::fs::read_to_string(manifest_path("packaging/node.yaml"))
        .expect("reading packaging/node.yaml");
    // Unknown keys and bad values stop the start, so a node that serves read the whole file.
    // The test's flags replace the installed paths (listen and admin addresses, zones, GeoIP
    // data, state directory); test-deb.sh starts the installed node with them.
    let node = Node::builder(ZONE).config(&text).start();
    let r = query_udp(node.dns, &query("www.api.example.com", RecordType::A));
    assert_eq!(addresses(&r), ["192.0.2.80"]);
}
