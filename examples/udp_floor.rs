//! The floor of a UDP DNS server on this kernel path: the same `recvmmsg`/`sendmmsg` loop as
//! `dns::udp`, but each query is answered by flipping it into a response in place (QR and AA
//! set, no records), so the user-space work per query is a few dozen instructions. Run it
//! beside gdnsd under the same dnsperf load to see how much of a server's CPU per query is the
//! kernel's whatever the server does:
//! `taskset -c 0 target/release/examples/udp_floor 127.0.0.1:5399`.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;

const BATCH: usize = 32;
const MAX: usize = 4096;

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5399".to_string());
    let socket = UdpSocket::bind(&addr)?;
    let fd = socket.as_raw_fd();
    let mut bufs = vec![[0u8; MAX]; BATCH];
    // SAFETY: all-zero bytes are valid for these plain C structs.
    let mut addrs: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
    // SAFETY: as above.
    let mut iovs: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BATCH];
    // SAFETY: as above.
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    loop {
        for i in 0..BATCH {
            iovs[i].iov_base = bufs[i].as_mut_ptr().cast();
            iovs[i].iov_len = MAX;
            let h = &mut msgs[i].msg_hdr;
            h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
            msgs[i].msg_len = 0;
        }
        // SAFETY: every header points at this thread's live buffers, sized as declared.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            continue;
        }
        let n = n as usize;
        for i in 0..n {
            let len = (msgs[i].msg_len as usize).min(MAX);
            let b = &mut bufs[i];
            if len >= 12 {
                b[2] |= 0x84;
            }
            iovs[i].iov_len = len;
            // The address the kernel wrote stays in place: send back to it.
        }
        // SAFETY: the same headers, now pointing at the responses.
        unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as libc::c_uint, 0) };
    }
}
