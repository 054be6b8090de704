//! A TLS front for a plain-HTTP peer in the test, with its own private CA: what a backend or an
//! identity provider behind a company CA looks like to vmcp.
//!
//! [`TlsFront::bind`] takes a loopback port first (so a peer can be told its public `https://`
//! address before it starts), [`TlsFront::forward`] then terminates TLS there (a certificate for
//! `127.0.0.1` and `localhost`, signed by a CA made for this front) and copies bytes to the
//! plain peer. It runs on its own thread and runtime and stops when dropped.

use std::sync::Arc;

use tokio_rustls::rustls;

/// A TLS listener in front of a plain loopback port.
pub struct TlsFront {
    /// The public base, `https://127.0.0.1:PORT`.
    pub url: String,
    /// The CA that signed the front's certificate, PEM (what `caBundlePath` points at).
    pub ca_pem: String,
    listener: Option<std::net::TcpListener>,
    config: Arc<rustls::ServerConfig>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsFront {
    /// Binds a free loopback port and makes a CA and a server certificate for it.
    pub fn bind() -> TlsFront {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(rcgen::DnType::CommonName, "vmcp test CA");
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
        let key = rcgen::KeyPair::generate().expect("server key");
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("server params");
        let cert = params.signed_by(&key, &issuer).expect("server certificate");
        let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
            .expect("server key DER");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key_der)
            .expect("server config");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("https://{}", listener.local_addr().expect("addr"));
        TlsFront {
            url,
            ca_pem: ca_cert.pem(),
            listener: Some(listener),
            config: Arc::new(config),
            stop: None,
            thread: None,
        }
    }

    /// Serves TLS on the bound port, each connection copied to `127.0.0.1:upstream`.
    pub fn forward(mut self, upstream: u16) -> TlsFront {
        let listener = self.listener.take().expect("forward once");
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.clone());
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let (tcp, _) = tokio::select! {
                        _ = &mut stopped => return,
                        r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                    };
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        // A client that refuses the certificate ends its handshake here.
                        let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                        let Ok(mut plain) =
                            tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                        else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    });
                }
            });
        });
        self.stop = Some(stop);
        self.thread = Some(thread);
        self
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
