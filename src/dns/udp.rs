//! The UDP loop: one thread per socket (SO_REUSEPORT spreads clients over them), receiving and
//! sending in batches with recvmmsg/sendmmsg so the kernel crossing is paid once per batch rather
//! than twice per query. Each datagram goes to `Handler::respond`, and each response through
//! response rate limiting (`limit::UdpRrl`) when it is on.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::Handler;
use super::limit::UdpRrl;

/// Datagrams handled per system call at most.
const BATCH: usize = 32;
/// Larger requests are truncated by the kernel and then fail to parse: DNS queries are small.
const MAX_REQUEST: usize = 4096;
/// How often a blocked receive wakes up to notice shutdown.
const WAKE: Duration = Duration::from_millis(200);

/// Serves `socket` until `stop` is set.
pub fn run(
    socket: std::net::UdpSocket,
    handler: Arc<Handler>,
    rrl: Option<Arc<UdpRrl>>,
    stop: Arc<AtomicBool>,
) {
    if let Err(e) = socket
        .set_nonblocking(false)
        .and_then(|()| socket.set_read_timeout(Some(WAKE)))
    {
        tracing::error!(error = %e, "UDP socket setup failed");
        return;
    }
    let fd = socket.as_raw_fd();
    let mut bufs = vec![[0u8; MAX_REQUEST]; BATCH];
    let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(512)).collect();
    let mut name = String::with_capacity(256);
    let mut view = handler.view();
    let mut addrs: Vec<libc::sockaddr_storage> = vec![zeroed_storage(); BATCH];
    let mut iovs: Vec<libc::iovec> = vec![zeroed_iovec(); BATCH];
    let mut msgs: Vec<libc::mmsghdr> = vec![zeroed_mmsghdr(); BATCH];
    let mut send_addrs: Vec<libc::sockaddr_storage> = vec![zeroed_storage(); BATCH];
    let mut send_iovs: Vec<libc::iovec> = vec![zeroed_iovec(); BATCH];
    let mut send_msgs: Vec<libc::mmsghdr> = vec![zeroed_mmsghdr(); BATCH];

    // Headers the last receive filled (the kernel writes lengths and flags into those only):
    // all of them at first. Resetting only these keeps a batch of one (light load) cheap.
    let mut filled = BATCH;
    while !stop.load(Ordering::Relaxed) {
        for i in 0..filled {
            iovs[i].iov_base = bufs[i].as_mut_ptr().cast();
            iovs[i].iov_len = MAX_REQUEST;
            let h = &mut msgs[i].msg_hdr;
            h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            msgs[i].msg_len = 0;
        }
        // SAFETY: every mmsghdr points at a live buffer, address and iovec of this thread, sized
        // as declared; the kernel writes at most those sizes.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            match err.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    // Idle: let go of snapshots replaced meanwhile (a reload waits for that).
                    view.refresh();
                    continue;
                }
                std::io::ErrorKind::Interrupted => continue,
                _ => {
                    tracing::warn!(error = %err, "UDP receive failed");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
        }
        filled = n as usize;
        let mut queued = 0;
        let mut answered = 0;
        // Two clock readings per batch, for the latency metric and RRL: the batch is handled
        // within microseconds, and its responses leave together.
        let received = std::time::Instant::now();
        let now = rrl
            .as_ref()
            .map(|_| tokio::time::Instant::from_std(received));
        for i in 0..n as usize {
            let len = (msgs[i].msg_len as usize).min(MAX_REQUEST);
            let Some(src) = to_socket_addr(&addrs[i]) else {
                continue;
            };
            // Never answer port 0, unspecified or broadcast sources (reflection).
            if src.port() == 0 || src.ip().is_unspecified() || is_broadcast(&src) {
                continue;
            }
            if msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                continue;
            }
            let Some(facts) = handler.respond_with(
                &mut view,
                &bufs[i][..len],
                src,
                false,
                &mut outs[queued],
                &mut name,
            ) else {
                continue;
            };
            answered += 1;
            if rrl.as_ref().zip(now).is_none_or(|(rrl, now)| {
                rrl.admit(
                    src.ip(),
                    &facts,
                    &name,
                    len,
                    &mut outs[queued],
                    &handler.snapshots.metrics,
                    now,
                )
            }) {
                send_addrs[queued] = addrs[i];
                queued += 1;
            }
        }
        // Every answered query counts, also one rate limiting then drops (as the query
        // counters do): from the batch's receipt to its responses ready to send. Observed
        // before the send, as the counters are, so a client that has its answer finds it
        // counted.
        handler
            .snapshots
            .metrics
            .observe_queries(received.elapsed(), answered);
        let mut sent = 0;
        while sent < queued {
            for k in sent..queued {
                send_iovs[k].iov_base = outs[k].as_mut_ptr().cast();
                send_iovs[k].iov_len = outs[k].len();
                let h = &mut send_msgs[k].msg_hdr;
                h.msg_name = (&mut send_addrs[k] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = addr_len(&send_addrs[k]);
                h.msg_iov = &mut send_iovs[k];
                h.msg_iovlen = 1;
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
                h.msg_flags = 0;
            }
            // SAFETY: the headers point at this thread's response buffers and addresses.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    send_msgs[sent..].as_mut_ptr(),
                    (queued - sent) as libc::c_uint,
                    0,
                )
            };
            if r <= 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                // One destination failed (unreachable, buffer full): skip it, send the rest.
                tracing::debug!(error = %err, "UDP send failed");
                sent += 1;
            } else {
                sent += r as usize;
            }
        }
    }
}

fn to_socket_addr(a: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match a.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6 =
                unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn addr_len(a: &libc::sockaddr_storage) -> libc::socklen_t {
    match a.ss_family as libc::c_int {
        libc::AF_INET => std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        _ => std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
    }
}

fn is_broadcast(src: &SocketAddr) -> bool {
    matches!(src, SocketAddr::V4(v4) if v4.ip().is_broadcast())
}

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is a plain C struct of integers and byte arrays; all zeros is a
    // valid (unspecified-family) value.
    unsafe { std::mem::zeroed() }
}

fn zeroed_iovec() -> libc::iovec {
    // SAFETY: an iovec of a null pointer and length 0 is valid; the kernel reads no memory.
    unsafe { std::mem::zeroed() }
}

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr holds integers and null pointers when zeroed; msg_iov is set before use.
    unsafe { std::mem::zeroed() }
}
