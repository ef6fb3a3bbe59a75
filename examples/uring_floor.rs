//! The floor of a UDP DNS server on io_uring, beside `udp_floor` (recvmmsg/sendmmsg): one
//! multishot `recvmsg` into a ring of provided buffers, each query flipped into a response in
//! place and sent from its own buffer, and one `io_uring_enter` per wake-up that both submits
//! the batch's sends and waits for them and for the next datagram. Run it beside gdnsd under the
//! same dnsperf load: `taskset -c 0 target/release/examples/uring_floor 127.0.0.1:5398`.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use io_uring::{IoUring, opcode, types};

const BUFS: u16 = 256;
const BUF_LEN: usize = 2048;
const RECV: u64 = u64::MAX;

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5398".to_string());
    let socket = UdpSocket::bind(&addr)?;
    let fd = types::Fd(socket.as_raw_fd());
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(512)?;

    // The provided-buffer ring: page-aligned entries, then the buffers themselves.
    let layout = std::alloc::Layout::from_size_align(BUFS as usize * 16, 4096)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    // SAFETY: a non-zero size; the memory lives until the process ends.
    let entries = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<types::BufRingEntry>();
    let mut bufs = vec![0u8; BUFS as usize * BUF_LEN];
    // SAFETY: `entries` holds BUFS entries and lives as long as the ring.
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(entries as u64, BUFS, 0, 0)?;
    }
    let mut tail: u16 = 0;
    let give = |tail: &mut u16, bid: u16, bufs: &mut [u8]| {
        // SAFETY: the index is masked into the ring; the buffer is this program's.
        unsafe {
            let e = &mut *entries.add((*tail & (BUFS - 1)) as usize);
            e.set_addr(bufs.as_mut_ptr().add(bid as usize * BUF_LEN) as u64);
            e.set_len(BUF_LEN as u32);
            e.set_bid(bid);
        }
        *tail = tail.wrapping_add(1);
    };
    for bid in 0..BUFS {
        give(&mut tail, bid, &mut bufs);
    }
    let publish = |tail: u16| {
        // SAFETY: the tail field overlays the first entry's reserved field.
        unsafe {
            let t = types::BufRingEntry::tail(entries) as *const std::sync::atomic::AtomicU16;
            (*t).store(tail, std::sync::atomic::Ordering::Release);
        }
    };
    publish(tail);

    // SAFETY: all-zero bytes are valid for these plain C structs.
    let mut recv_hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    recv_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: as above.
    let mut send_hdrs: Vec<libc::msghdr> = vec![unsafe { std::mem::zeroed() }; BUFS as usize];
    // SAFETY: as above.
    let mut send_iovs: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BUFS as usize];

    let arm = |ring: &mut IoUring, hdr: &libc::msghdr| {
        let e = opcode::RecvMsgMulti::new(fd, hdr, 0)
            .build()
            .user_data(RECV);
        // SAFETY: the header outlives the operation.
        unsafe { ring.submission().push(&e) }.is_ok()
    };
    arm(&mut ring, &recv_hdr);
    let mut sends: usize = 0;
    // The completions of one wake-up, taken off the ring before new entries go on it; kept
    // between wake-ups, so the loop allocates nothing.
    let mut done: Vec<(u64, i32, u32)> = Vec::with_capacity(BUFS as usize + 1);
    loop {
        // One crossing: submit the sends queued, wait for them and the next datagram.
        match ring.submit_and_wait(sends + 1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
        let mut rearm = false;
        let mut returned = false;
        done.clear();
        done.extend(
            ring.completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(ud, res, flags) in &done {
            if ud != RECV {
                sends -= 1;
                give(&mut tail, ud as u16, &mut bufs);
                returned = true;
                continue;
            }
            if !io_uring::cqueue::more(flags) {
                rearm = true;
            }
            let Some(bid) = io_uring::cqueue::buffer_select(flags) else {
                continue;
            };
            if res < 0 {
                give(&mut tail, bid, &mut bufs);
                returned = true;
                continue;
            }
            let start = bid as usize * BUF_LEN;
            let buf = &mut bufs[start..start + res as usize];
            let Ok(out) = types::RecvMsgOut::parse(buf, &recv_hdr) else {
                give(&mut tail, bid, &mut bufs);
                returned = true;
                continue;
            };
            let name_len = out.incoming_name_len().min(recv_hdr.msg_namelen);
            let name_off = out.name_data().as_ptr() as usize - buf.as_ptr() as usize;
            let payload_off = out.payload_data().as_ptr() as usize - buf.as_ptr() as usize;
            let payload_len = out.payload_data().len();
            if payload_len >= 12 {
                buf[payload_off + 2] |= 0x84;
            }
            let b = bid as usize;
            send_iovs[b].iov_base = buf[payload_off..].as_mut_ptr().cast();
            send_iovs[b].iov_len = payload_len;
            send_hdrs[b].msg_name = buf[name_off..].as_mut_ptr().cast();
            send_hdrs[b].msg_namelen = name_len;
            send_hdrs[b].msg_iov = &mut send_iovs[b];
            send_hdrs[b].msg_iovlen = 1;
            let e = opcode::SendMsg::new(fd, &send_hdrs[b])
                .build()
                .user_data(bid as u64);
            // SAFETY: the header, iovec and buffer live until the send's completion returns it.
            if unsafe { ring.submission().push(&e) }.is_ok() {
                sends += 1;
            } else {
                give(&mut tail, bid, &mut bufs);
                returned = true;
            }
        }
        if returned {
            publish(tail);
        }
        if rearm {
            arm(&mut ring, &recv_hdr);
        }
    }
}
