//! A real `redis-server` for tests (Debian's, from `VMCP_REDIS_SERVER`, which
//! `scripts/install-test-tools.sh` installs and `.tools/env.sh` exports): on a free loopback port,
//! no snapshots, killed on drop; it can be stopped and started again on the same port. Without
//! `VMCP_REDIS_SERVER` the test fails: a skipped shared-storage test proves nothing.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{TempDir, free_port};

/// A running (or stopped) `redis-server`.
pub struct RedisServer {
    port: u16,
    dir: TempDir,
    password: Option<String>,
    persistent: bool,
    child: Option<Child>,
}

/// The `redis-server` to run.
pub fn redis_server_bin() -> String {
    std::env::var("VMCP_REDIS_SERVER").unwrap_or_else(|_| {
        panic!(
            "VMCP_REDIS_SERVER is not set: run scripts/install-test-tools.sh and \
             `source .tools/env.sh` (these tests need a real redis-server)"
        )
    })
}

impl RedisServer {
    /// A server with nothing on disk.
    pub fn start() -> RedisServer {
        Self::launch(free_port(), None, false)
    }

    /// A server with nothing on disk, on `port`.
    pub fn start_on(port: u16) -> RedisServer {
        Self::launch(port, None, false)
    }

    /// A server that requires `password` (`requirepass`).
    pub fn with_password(password: &str) -> RedisServer {
        Self::launch(free_port(), Some(password.to_owned()), false)
    }

    /// A server that keeps its data across [`RedisServer::stop`] / [`RedisServer::restart`]
    /// (append-only file, fsync on every write, in its own directory).
    pub fn persistent() -> RedisServer {
        Self::launch(free_port(), None, true)
    }

    fn launch(port: u16, password: Option<String>, persistent: bool) -> RedisServer {
        let mut s =
            RedisServer { port, dir: TempDir::new("redis"), password, persistent, child: None };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let bin = redis_server_bin();
        let mut cmd = Command::new(&bin);
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--protected-mode", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir.0)
            .arg("--logfile")
            .arg(self.dir.0.join("redis.log"));
        if self.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {bin}: {e}"));
        self.child = Some(child);
        self.wait_ready();
    }

    /// Polls PING until the server answers (10 s at most).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.ping() {
                return;
            }
            if let Some(c) = &mut self.child
                && let Ok(Some(status)) = c.try_wait()
            {
                let log = std::fs::read_to_string(self.dir.0.join("redis.log")).unwrap_or_default();
                panic!("redis-server exited ({status}):\n{log}");
            }
            assert!(Instant::now() < deadline, "redis-server on {} did not answer PING", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the server answers PING now.
    pub fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut req = String::new();
        if let Some(p) = &self.password {
            req.push_str(&format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{p}\r\n", p.len()));
        }
        req.push_str("*1\r\n$4\r\nPING\r\n");
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut buf = Vec::new();
        let mut chunk = [0u8; 64];
        while !String::from_utf8_lossy(&buf).contains("PONG") {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if String::from_utf8_lossy(&buf).contains("-") {
                return false;
            }
        }
        true
    }

    /// The keys matching `pattern` (`KEYS`), one per line.
    pub fn keys(&self, pattern: &str) -> String {
        let auth = self.password.as_ref().map(|p| format!(":{p}@")).unwrap_or_default();
        let client =
            redis::Client::open(format!("redis://{auth}127.0.0.1:{}/", self.port)).unwrap();
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(2)).unwrap();
        let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(&mut conn).unwrap();
        keys.join("\n")
    }

    /// The pub/sub channels with a subscriber matching `pattern` (`PUBSUB CHANNELS`), sorted.
    #[allow(dead_code)]
    pub fn channels(&self, pattern: &str) -> Vec<String> {
        let auth = self.password.as_ref().map(|p| format!(":{p}@")).unwrap_or_default();
        let client =
            redis::Client::open(format!("redis://{auth}127.0.0.1:{}/", self.port)).unwrap();
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(2)).unwrap();
        let mut names: Vec<String> =
            redis::cmd("PUBSUB").arg("CHANNELS").arg(pattern).query(&mut conn).unwrap();
        names.sort();
        names
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, as `sessionStorage.address` takes it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Settings for the library's store, with a key prefix of the test's own.
    pub fn settings(&self, prefix: &str) -> vmcp::store::RedisSettings {
        let mut s = vmcp::store::RedisSettings::new("127.0.0.1", self.port);
        s.key_prefix = prefix.to_owned();
        s.password = self.password.as_deref().map(vmcp::auth::identity::Secret::new);
        s
    }

    /// Kills the server (SIGKILL: as a crash would) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port (and directory).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
