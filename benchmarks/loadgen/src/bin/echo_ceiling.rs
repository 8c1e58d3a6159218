//! `echo-ceiling`: the fastest echo server one thread can be here, used as
//! the ceiling row of the echo tables (same client, same pinning).
//!
//! Single-threaded mio (epoll, edge-triggered), one 256 KiB buffer per
//! connection allocated at accept, no allocation per request.  A connection
//! reads until the socket would block and writes each chunk straight back;
//! when the peer stops reading, it stops reading too until the socket is
//! writable again (back-pressure).  On EOF it finishes echoing and closes.
//!
//!     echo-ceiling --addr 127.0.0.1:25000     (or --addr unix:/tmp/x.sock)
//!
//! Prints `READY <addr>` once listening (port 0 picks a free port, and the
//! line shows it); runs until killed.

use loadgen::{die, raise_nofile, Endpoint, Opts, Sock};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;

const LISTENER: Token = Token(usize::MAX);
const BUF: usize = 256 * 1024;

struct Conn {
    sock: Sock,
    buf: Box<[u8]>,
    /// Bytes `buf[head..tail]` were read and not yet written back.
    head: usize,
    tail: usize,
}

/// Echo as far as the socket allows.  Returns false when the connection is
/// finished (EOF after everything was echoed, or an error).
fn serve(c: &mut Conn) -> bool {
    loop {
        while c.head < c.tail {
            match c.sock.write(&c.buf[c.head..c.tail]) {
                Ok(n) if n > 0 => c.head += n,
                Ok(_) => return false,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        c.head = 0;
        c.tail = 0;
        match c.sock.read(&mut c.buf) {
            Ok(0) => return false,
            Ok(n) => c.tail = n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

fn main() {
    let o = Opts::from_args(&["addr"], "usage: echo-ceiling --addr HOST:PORT|unix:PATH");
    let ep = Endpoint::parse(o.get("addr").unwrap_or("127.0.0.1:25000")).unwrap_or_else(|e| die(&e));
    raise_nofile(65_536);
    let listener = ep.listen().unwrap_or_else(|e| die(&format!("listen on {ep}: {e}")));
    listener.set_nonblocking().expect("nonblocking listener");
    let mut poll = Poll::new().expect("epoll_create");
    poll.registry()
        .register(&mut SourceFd(&listener.as_raw_fd()), LISTENER, Interest::READABLE)
        .expect("epoll_ctl");
    match &listener {
        // The port may have been 0: say which one the kernel chose.
        loadgen::Listener::Tcp(l) => println!("READY {}", l.local_addr().expect("local_addr")),
        loadgen::Listener::Unix(_) => println!("READY {ep}"),
    }
    let _ = std::io::stdout().flush();

    // Slot vector: a token is an index; closed slots are reused.
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = Events::with_capacity(1024);
    loop {
        match poll.poll(&mut events, None) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => panic!("epoll_wait: {e}"),
            Ok(()) => {}
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    let sock = match listener.accept() {
                        Ok(s) => s,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) => {
                            eprintln!("accept: {e}");
                            break;
                        }
                    };
                    if sock.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let id = free.pop().unwrap_or_else(|| {
                        conns.push(None);
                        conns.len() - 1
                    });
                    let fd = sock.as_raw_fd();
                    let c = conns[id].insert(Conn { sock, buf: vec![0; BUF].into_boxed_slice(), head: 0, tail: 0 });
                    poll.registry()
                        .register(&mut SourceFd(&fd), Token(id), Interest::READABLE | Interest::WRITABLE)
                        .expect("epoll_ctl");
                    if !serve(c) {
                        let _ = poll.registry().deregister(&mut SourceFd(&fd));
                        conns[id] = None;
                        free.push(id);
                    }
                }
                continue;
            }
            let id = ev.token().0;
            let Some(c) = conns.get_mut(id).and_then(|c| c.as_mut()) else { continue };
            if !serve(c) {
                let _ = poll.registry().deregister(&mut SourceFd(&c.sock.as_raw_fd()));
                conns[id] = None;
                free.push(id);
            }
        }
    }
}
