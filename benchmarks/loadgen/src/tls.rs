//! TLS for the load client (rustls, ring provider) and the test
//! certificate the suite serves with.
//!
//! `Stream` is what the client's connections read and write: a plain
//! `Sock`, or a `Sock` under a rustls `ClientConnection`.  Both follow the
//! same non-blocking contract, which is what the edge-triggered pump in
//! `loadgen` relies on: `read`/`write` return `WouldBlock` only once the
//! socket itself returned it (so a new epoll edge will come), never while
//! bytes are still waiting in a buffer of ours.
//!
//! TLS details:
//! - the handshake runs blocking, at connect time, before the socket goes
//!   non-blocking (it is not part of any measured window);
//! - `write` encrypts into rustls' outgoing buffer and then writes as much
//!   of it as the socket takes; what is left is flushed by the next `write`
//!   or `flush_pending` call (`wants_flush` tells the pump it must call it);
//! - `read` hands out buffered plaintext first and reads the socket only
//!   when there is none (rustls refuses new records while its plaintext
//!   buffer is full);
//! - `shutdown_write` sends `close_notify`; the server answers with its own
//!   and `read` then returns `Ok(0)`.
//!
//! `generate_cert` writes a throw-away CA and a server certificate for
//! `localhost` / `127.0.0.1` signed by it; the client trusts only that CA
//! and checks the server's name, as a real client would.

use crate::Sock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use std::io::{self, ErrorKind, Read, Write};
use std::path::Path;
use std::sync::Arc;

/// A connection's byte stream: plain or TLS.
pub enum Stream {
    Plain(Sock),
    Tls(Box<TlsSock>),
}

/// A socket under a rustls client session.
pub struct TlsSock {
    conn: ClientConnection,
    sock: Sock,
}

/// Client configuration trusting only the CA in `cafile` (PEM).
pub fn client_config(cafile: &Path) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cafile).map_err(|e| format!("{}: {e}", cafile.display()))? {
        let cert = cert.map_err(|e| format!("{}: {e}", cafile.display()))?;
        roots.add(cert).map_err(|e| format!("{}: {e}", cafile.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl Stream {
    /// Wrap a connected, blocking socket: plain, or after a TLS handshake
    /// with `server_name` verified.  The stream is non-blocking afterwards.
    pub fn new(mut sock: Sock, tls: Option<(&Arc<ClientConfig>, &str)>) -> Result<Stream, String> {
        let stream = match tls {
            None => Stream::Plain(sock),
            Some((config, name)) => {
                let name = ServerName::try_from(name.to_string()).map_err(|e| format!("server name {name:?}: {e}"))?;
                let mut conn = ClientConnection::new(Arc::clone(config), name).map_err(|e| e.to_string())?;
                while conn.is_handshaking() {
                    conn.complete_io(&mut sock).map_err(|e| format!("TLS handshake: {e}"))?;
                }
                Stream::Tls(Box::new(TlsSock { conn, sock }))
            }
        };
        stream.sock().set_nonblocking(true).map_err(|e| format!("nonblocking: {e}"))?;
        Ok(stream)
    }

    pub fn sock(&self) -> &Sock {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }

    /// Plaintext in; on TLS, `Ok(0)` means the server sent `close_notify`.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }

    /// Like `read`, but the bytes are not looked at: on plain TCP they are
    /// dropped in the kernel (see `Sock::discard`).
    pub fn discard(&mut self, scratch: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.discard(scratch),
            Stream::Tls(t) => t.read(scratch),
        }
    }

    /// Plaintext out: how much was taken.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }

    /// Whether encrypted bytes are waiting for the socket (`flush_pending`).
    pub fn wants_flush(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(t) => t.conn.wants_write(),
        }
    }

    pub fn flush_pending(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            Stream::Tls(t) => t.flush_tls(),
        }
    }

    /// End of our side: FIN on plain sockets, `close_notify` on TLS.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.shutdown_write(),
            Stream::Tls(t) => {
                t.conn.send_close_notify();
                match t.flush_tls() {
                    Err(e) if e.kind() != ErrorKind::WouldBlock => Err(e),
                    _ => Ok(()),
                }
            }
        }
    }
}

impl TlsSock {
    /// Write buffered records until none is left or the socket is full.
    fn flush_tls(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::Error::new(ErrorKind::WriteZero, "TLS write returned 0")),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.flush_tls()?; // room first: WouldBlock here means the socket is full
        let n = self.conn.writer().write(buf)?;
        match self.flush_tls() {
            Err(e) if e.kind() != ErrorKind::WouldBlock => Err(e),
            _ => Ok(n), // leftovers go out with the next write or flush_pending
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                other => return other, // data, Ok(0) at close_notify, or UnexpectedEof
            }
            // No plaintext buffered: read records (WouldBlock passes up).
            match self.conn.read_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            self.conn.process_new_packets().map_err(|e| io::Error::new(ErrorKind::InvalidData, format!("TLS: {e}")))?;
            // Records may call for an answer (e.g. a key update).
            match self.flush_tls() {
                Err(e) if e.kind() != ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
        }
    }
}

/// Write `ca.pem`, `cert.pem` and `key.pem` into `dir`: a fresh CA and a
/// server certificate for `localhost` and `127.0.0.1` signed by it.
pub fn generate_cert(dir: &Path) -> Result<(), String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let err = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "oxloop benchmark CA (throw-away)");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).map_err(err)?;
    params.distinguished_name.push(DnType::CommonName, "localhost");
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &issuer).map_err(err)?;
    for (name, text) in [("ca.pem", ca_cert.pem()), ("cert.pem", cert.pem()), ("key.pem", key.serialize_pem())] {
        std::fs::write(dir.join(name), text).map_err(|e| format!("{}: {e}", dir.join(name).display()))?;
    }
    Ok(())
}
