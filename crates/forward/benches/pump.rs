//! Pump cost: moving 64 KiB between two loopback TCP sockets with splice (socket -> pipe ->
//! socket, no byte in userspace) versus a userspace copy (read into a buffer, write it out).
//!
//! Rig: a writer thread keeps socket A full; its bytes arrive at the proxy's `p_in`. The proxy's
//! `p_out` is connected to C, which a reader thread keeps draining. The measured loop only moves
//! exactly 64 KiB `p_in` -> `p_out` per iteration; TCP flow control paces the two helper threads,
//! so the loop runs in steady state and cannot deadlock (no buffer has to hold a whole chunk).
//! All sockets are blocking: no readiness polling is measured, only the data path.
#![allow(missing_docs, reason = "criterion macros generate undocumented items")]
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::thread::JoinHandle;
use weir_sys::{Pipe, SpliceFlags};

const CHUNK: usize = 64 * 1024;

struct Rig {
    p_in: TcpStream,
    p_out: TcpStream,
    moved: u64,
    writer: JoinHandle<()>,
    reader: JoinHandle<u64>,
}

fn connected_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let client = TcpStream::connect(listener.local_addr().expect("local addr")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    (client, server)
}

impl Rig {
    fn new() -> Self {
        let (mut a, p_in) = connected_pair();
        let (p_out, mut c) = connected_pair();
        // Ends when the proxy closes p_in (reset: unread bytes remain).
        let writer = std::thread::spawn(move || {
            let buf = vec![0xA5u8; CHUNK];
            while a.write_all(&buf).is_ok() {}
        });
        // Ends at the FIN when the proxy closes p_out; returns what it received.
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; CHUNK];
            let mut total = 0u64;
            while let Ok(n @ 1..) = c.read(&mut buf) {
                total += n as u64;
            }
            total
        });
        Self { p_in, p_out, moved: 0, writer, reader }
    }

    /// Userspace copy of exactly one chunk.
    fn copy(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let mut moved = 0;
        while moved < CHUNK {
            let n = (&self.p_in).read(&mut buf[..CHUNK - moved])?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            (&self.p_out).write_all(&buf[..n])?;
            moved += n;
        }
        self.moved += CHUNK as u64;
        Ok(())
    }

    /// splice of exactly one chunk, the way `weir_forward::splice_ktls` does it: fill the pipe
    /// from the source, then empty it fully into the destination.
    fn splice(&mut self, pipe: &Pipe) -> io::Result<()> {
        let mut moved = 0;
        while moved < CHUNK {
            let want = (CHUNK - moved).min(pipe.capacity());
            let n = retry(|| weir_sys::splice(self.p_in.as_fd(), pipe.write.as_fd(), want, SpliceFlags::Flush))?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let mut left = n;
            while left > 0 {
                let m = retry(|| weir_sys::splice(pipe.read.as_fd(), self.p_out.as_fd(), left, SpliceFlags::Flush))?;
                if m == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                left -= m;
            }
            moved += n;
        }
        self.moved += CHUNK as u64;
        Ok(())
    }

    /// Closes the proxy sockets, joins the helpers and checks every byte moved reached C.
    fn finish(self) {
        let Self { p_in, p_out, moved, writer, reader } = self;
        drop(p_out);
        let received = reader.join().expect("reader thread");
        assert_eq!(received, moved, "bytes moved by the proxy all reached C");
        drop(p_in);
        writer.join().expect("writer thread");
    }
}

/// The pipe is non-blocking; the sockets are blocking, so EAGAIN is not expected, but a spin is
/// the right answer if a kernel reports it anyway.
fn retry(mut f: impl FnMut() -> Result<usize, weir_sys::SyscallError>) -> io::Result<usize> {
    loop {
        match f() {
            Err(e) if e.would_block() => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

fn pump(c: &mut Criterion) {
    let mut g = c.benchmark_group("pump_64k");
    g.throughput(Throughput::Bytes(CHUNK as u64));

    let mut rig = Rig::new();
    // The production pipe size (256 KiB asked; the kernel may grant less).
    let pipe = Pipe::with_capacity(weir_forward::Limits::default().pipe_size).expect("pipe");
    g.bench_function("splice", |b| b.iter(|| rig.splice(&pipe).expect("splice chunk")));
    rig.finish();

    let mut rig = Rig::new();
    let mut buf = vec![0u8; CHUNK];
    g.bench_function("userspace_copy", |b| b.iter(|| rig.copy(&mut buf).expect("copy chunk")));
    rig.finish();

    g.finish();
}

criterion_group!(benches, pump);
criterion_main!(benches);
