//! Debian's `murmurd` (mumble-server 1.3.4) as a test peer: the real PTT server the bridge must
//! interoperate with. Each [`Murmur`] runs in its own temp dir on a free loopback port, presents the
//! committed test certificate (`fixtures/certs/`), and is killed when dropped.
//!
//! ```no_run
//! let mut server = testkit::murmur::Murmur::builder()
//!     .channels(&["North", "South", "North/Sub"])
//!     .user("dispatcher", "secret")
//!     .start();
//! let port = server.port();
//! let north = server.channel_id("North");
//! server.kill();
//! server.restart(); // same port, same database
//! # let _ = (port, north);
//! ```

use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::peers;

/// SHA-256 fingerprint (lowercase hex of the DER certificate) of `fixtures/certs/murmur-cert.pem`,
/// the certificate every test murmurd presents; pin it in bridge configs.
pub const TEST_CERT_SHA256: &str =
    "861369fbd843c32eebbdccd92d52ad01ac6ab7aa6364161b5616eb67e1f806b4";

/// How long a (re)start may take before the test fails. murmurd needs well under a second here; the
/// margin is for a loaded 2-core CI machine.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The test certificate's PEM file.
pub fn test_cert_path() -> PathBuf {
    peers::fixture("certs/murmur-cert.pem")
}

/// The test certificate's private key (PEM).
pub fn test_key_path() -> PathBuf {
    peers::fixture("certs/murmur-key.pem")
}

/// Why a start failed: the port was taken (worth another port) or anything else (fatal).
#[derive(Debug)]
enum StartError {
    PortTaken(String),
    Other(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::PortTaken(line) => write!(f, "port taken: {line}"),
            StartError::Other(e) => f.write_str(e),
        }
    }
}

/// Options for a [`Murmur`]; see [`Murmur::builder`].
#[derive(Debug, Clone)]
pub struct MurmurBuilder {
    channels: Vec<String>,
    users: Vec<(String, String)>,
    ini: Vec<(String, String)>,
    superuser_password: String,
}

impl MurmurBuilder {
    /// Adds a channel by path ("North" or "Parent/Child"); missing parents are created too.
    pub fn channel(mut self, path: &str) -> Self {
        self.channels.push(path.to_string());
        self
    }

    /// Adds several channels by path, in order (their ids follow that order, starting at 1).
    pub fn channels(mut self, paths: &[&str]) -> Self {
        self.channels.extend(paths.iter().map(|p| p.to_string()));
        self
    }

    /// Registers a user with a password (ids start at 1; 0 is SuperUser).
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.users.push((name.to_string(), password.to_string()));
        self
    }

    /// Sets an extra ini key (e.g. `("defaultchannel", "1")`), or overrides one of the test defaults.
    pub fn ini(mut self, key: &str, value: &str) -> Self {
        self.ini.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
        self.ini.push((key.to_string(), value.to_string()));
        self
    }

    /// Sets the SuperUser password (default `superuser-test-pw`).
    pub fn superuser_password(mut self, pw: &str) -> Self {
        self.superuser_password = pw.to_string();
        self
    }

    /// Creates the server's database, channels and users, starts murmurd and waits until it completes
    /// a TLS handshake with the test certificate. Panics (with murmurd's log) when it cannot.
    pub fn start(self) -> Murmur {
        Murmur::launch(self)
    }
}

/// A running Debian murmurd on 127.0.0.1; killed on drop.
pub struct Murmur {
    dir: tempfile::TempDir,
    ini_path: PathBuf,
    log_path: PathBuf,
    db_path: PathBuf,
    port: u16,
    child: Option<Child>,
    /// Length of the log when the current run started.
    run_log_start: usize,
    channels: Vec<(String, u32)>,
    users: Vec<(String, u32)>,
    superuser_password: String,
    ini: Vec<(String, String)>,
}

impl Murmur {
    /// Options: channels, registered users, extra ini keys.
    pub fn builder() -> MurmurBuilder {
        MurmurBuilder {
            channels: Vec::new(),
            users: Vec::new(),
            ini: Vec::new(),
            superuser_password: "superuser-test-pw".to_string(),
        }
    }

    /// Starts a server with these channels (paths like "North" or "North/Sub").
    pub fn start(channels: &[&str]) -> Murmur {
        Self::builder().channels(channels).start()
    }

    fn launch(b: MurmurBuilder) -> Murmur {
        let murmurd = peers::require("murmurd");
        let sqlite3 = peers::require("sqlite3");
        let dir = tempfile::Builder::new()
            .prefix("murmur-")
            .tempdir()
            .expect("temp dir for murmurd");
        let (channels, channel_sql) = channel_rows(&b.channels);
        let (users, user_sql) = user_rows(&b.users);
        let mut m = Murmur {
            ini_path: dir.path().join("murmur.ini"),
            log_path: dir.path().join("murmurd.out"),
            db_path: dir.path().join("murmur.sqlite"),
            dir,
            port: 0,
            child: None,
            run_log_start: 0,
            channels,
            users,
            superuser_password: b.superuser_password,
            ini: b.ini,
        };

        // The port is free when picked but another test could take it before murmurd binds it:
        // try a few ports before giving up.
        for attempt in 1..=5 {
            m.port = peers::free_port();
            m.write_ini();
            if attempt == 1 {
                // -supw creates the database (and exits); channels and users go in before the real start.
                peers::run_ok(
                    Command::new(&murmurd)
                        .arg("-ini")
                        .arg(&m.ini_path)
                        .arg("-supw")
                        .arg(&m.superuser_password),
                    "murmurd -supw",
                );
                let sql = format!("BEGIN;\n{channel_sql}{user_sql}COMMIT;\n");
                let mut child = Command::new(&sqlite3)
                    .arg(&m.db_path)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("run sqlite3");
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(sql.as_bytes())
                    .unwrap();
                let out = child.wait_with_output().expect("sqlite3");
                assert!(
                    out.status.success(),
                    "sqlite3 could not add channels/users to murmurd's database: {}\nSQL:\n{sql}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            m.spawn();
            match m.wait_ready() {
                Ok(()) => return m,
                Err(StartError::PortTaken(line)) if attempt < 5 => {
                    eprintln!("murmurd: port {} taken ({line}); trying another", m.port);
                    m.kill();
                }
                Err(e) => panic!("murmurd did not come up: {e}\n{}", m.diagnostics()),
            }
        }
        unreachable!()
    }

    fn write_ini(&self) {
        let d = self.dir.path();
        let mut keys: Vec<(String, String)> = vec![
            (
                "database".into(),
                d.join("murmur.sqlite").display().to_string(),
            ),
            // murmurd -fg logs to its stderr (captured in murmurd.out); logfile is for completeness.
            ("logfile".into(), d.join("murmur.log").display().to_string()),
            ("pidfile".into(), d.join("murmur.pid").display().to_string()),
            ("host".into(), "127.0.0.1".into()),
            ("port".into(), self.port.to_string()),
            // A suite connects far more than 10 times in 120 s: without this murmurd silently bans
            // 127.0.0.1.
            ("autobanAttempts".into(), "0".into()),
            ("autobanTimeframe".into(), "0".into()),
            ("autobanTime".into(), "0".into()),
            ("bandwidth".into(), "72000".into()),
            ("users".into(), "200".into()),
            ("opusthreshold".into(), "0".into()),
            ("certrequired".into(), "false".into()),
            ("bonjour".into(), "false".into()),
            ("messageburst".into(), "100".into()),
            ("messagelimit".into(), "100".into()),
            ("welcometext".into(), "".into()),
            // A fixed PBKDF2 cost skips murmurd's ~1 s benchmark on first start.
            ("kdfiterations".into(), "1000".into()),
            ("sslCert".into(), test_cert_path().display().to_string()),
            ("sslKey".into(), test_key_path().display().to_string()),
        ];
        if running_as_root() {
            // As root murmurd switches to the mumble-server user, which cannot open a database in
            // our root-owned temp dir.
            keys.push(("uname".into(), "root".into()));
        }
        for (k, v) in &self.ini {
            keys.retain(|(key, _)| !key.eq_ignore_ascii_case(k));
            keys.push((k.clone(), v.clone()));
        }
        let mut text = String::new();
        for (k, v) in keys {
            let _ = writeln!(text, "{k}={v}");
        }
        fs::write(&self.ini_path, text).expect("write murmur.ini");
    }

    fn spawn(&mut self) {
        let murmurd = peers::require("murmurd");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("murmurd log file");
        let _ = writeln!(
            &log,
            "==== testkit: starting murmurd on 127.0.0.1:{}",
            self.port
        );
        self.run_log_start = log.metadata().map(|m| m.len() as usize).unwrap_or(0);
        let child = Command::new(murmurd)
            .arg("-ini")
            .arg(&self.ini_path)
            .arg("-fg") // stay in the foreground so the pid we hold is murmurd itself
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn murmurd");
        self.child = Some(child);
    }

    /// What murmurd printed since the current run started.
    fn run_log(&self) -> String {
        let log = fs::read(&self.log_path).unwrap_or_default();
        String::from_utf8_lossy(log.get(self.run_log_start..).unwrap_or_default()).into_owned()
    }

    /// Waits until this run of murmurd listens on our port and completes a TLS handshake (the TCP
    /// port opens before murmurd has its certificate). murmurd does not exit when it cannot bind: it
    /// logs it and idles, so its log is read to tell "port taken" from "still starting", and to be sure
    /// the handshake is with this murmurd and not with whatever else holds the port.
    fn wait_ready(&mut self) -> Result<(), StartError> {
        let start = Instant::now();
        let listening = format!("Server listening on 127.0.0.1:{}", self.port);
        let mut last_err = String::from("murmurd has not reported listening yet");
        while start.elapsed() < START_TIMEOUT {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(StartError::Other(format!("murmurd exited with {status}")));
            }
            let log = self.run_log();
            if let Some(line) = log.lines().find(|l| {
                (l.contains("Listen on") && l.contains("failed"))
                    || l.contains("Failed to bind UDP")
            }) {
                return Err(StartError::PortTaken(line.to_string()));
            }
            if log.contains(&listening) {
                match tls_fingerprint(self.addr(), Duration::from_secs(2)) {
                    Ok(fp) if fp != TEST_CERT_SHA256 => {
                        return Err(StartError::Other(format!(
                            "murmurd presents certificate {fp}, expected the test certificate \
                             {TEST_CERT_SHA256}"
                        )));
                    }
                    // UDP is bound right after TCP, before murmurd serves anyone; a failure shows
                    // in the log by now.
                    Ok(_) if self.run_log().contains("Failed to bind UDP") => {
                        return Err(StartError::PortTaken("Failed to bind UDP".into()));
                    }
                    Ok(_) => return Ok(()),
                    Err(e) => last_err = e,
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(StartError::Other(format!(
            "not ready within {START_TIMEOUT:?} (last: {last_err})"
        )))
    }

    /// The TCP (and UDP) port murmurd listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Always "127.0.0.1".
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// 127.0.0.1:port.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// SHA-256 fingerprint (lowercase hex) of the certificate this server presents.
    pub fn cert_sha256(&self) -> &'static str {
        TEST_CERT_SHA256
    }

    /// The SuperUser password set with `-supw`.
    pub fn superuser_password(&self) -> &str {
        &self.superuser_password
    }

    /// The channel id of a channel path ("North", "North/Sub"); 0 for "" (the root).
    /// Panics for an unknown path.
    pub fn channel_id(&self, path: &str) -> u32 {
        if path.is_empty() {
            return 0;
        }
        self.channels
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, id)| *id)
            .unwrap_or_else(|| panic!("no channel {path:?}; have {:?}", self.channels))
    }

    /// Every created channel as (path, id).
    pub fn channels(&self) -> &[(String, u32)] {
        &self.channels
    }

    /// The registered user id of a user added with [`MurmurBuilder::user`]. Panics when unknown.
    pub fn user_id(&self, name: &str) -> u32 {
        self.users
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| *id)
            .unwrap_or_else(|| panic!("no registered user {name:?}; have {:?}", self.users))
    }

    /// murmurd's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether murmurd is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Kills murmurd with SIGKILL (no goodbye to clients: like a crash or a pulled cable) and waits for
    /// it to exit. Does nothing when it is not running.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts murmurd again on the same port with the same database (kills it first if it runs) and
    /// waits until it completes a TLS handshake.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        if let Err(e) = self.wait_ready() {
            panic!(
                "murmurd did not come back on port {}: {e}\n{}",
                self.port,
                self.diagnostics()
            );
        }
    }

    /// Everything murmurd printed so far (all runs), for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The temp dir holding the ini, database and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The ini file murmurd runs with.
    pub fn ini_path(&self) -> &Path {
        &self.ini_path
    }

    /// A block for failure messages: where the server is and the end of its log.
    pub fn diagnostics(&self) -> String {
        let log = self.log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "--- murmurd 127.0.0.1:{} in {} (last {} log lines) ---\n{}\n---",
            self.port,
            self.dir.path().display(),
            tail.len(),
            tail.join("\n")
        )
    }
}

impl Drop for Murmur {
    fn drop(&mut self) {
        self.kill();
    }
}

impl std::fmt::Debug for Murmur {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Murmur")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .field("pid", &self.pid())
            .field("channels", &self.channels)
            .finish()
    }
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective uid of this process
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Channel rows for murmurd's `channels` table: ids in the order given, missing parents first.
fn channel_rows(paths: &[String]) -> (Vec<(String, u32)>, String) {
    let mut ids: Vec<(String, u32)> = Vec::new();
    let mut sql = String::new();
    for path in paths {
        let parts: Vec<&str> = path.split('/').collect();
        assert!(
            parts.iter().all(|p| !p.is_empty()),
            "bad channel path {path:?}"
        );
        for depth in 1..=parts.len() {
            let sub = parts[..depth].join("/");
            if ids.iter().any(|(p, _)| *p == sub) {
                continue;
            }
            let parent = if depth == 1 {
                0
            } else {
                let pp = parts[..depth - 1].join("/");
                ids.iter().find(|(p, _)| *p == pp).unwrap().1
            };
            let id = ids.len() as u32 + 1;
            let _ = writeln!(
                sql,
                "INSERT INTO channels (server_id, channel_id, parent_id, name, inheritacl) \
                 VALUES (1, {id}, {parent}, {}, 1);",
                sql_str(parts[depth - 1])
            );
            ids.push((sub, id));
        }
    }
    (ids, sql)
}

/// Registered users with murmurd's legacy (unsalted SHA-1) password hash, which it accepts and
/// upgrades to PBKDF2 on first login: this avoids computing PBKDF2 here.
fn user_rows(users: &[(String, String)]) -> (Vec<(String, u32)>, String) {
    use sha1::{Digest, Sha1};
    let mut ids = Vec::new();
    let mut sql = String::new();
    for (i, (name, pw)) in users.iter().enumerate() {
        let id = i as u32 + 1;
        let hash = hex(&Sha1::digest(pw.as_bytes()));
        let _ = writeln!(
            sql,
            "INSERT INTO users (server_id, user_id, name, pw) VALUES (1, {id}, {}, {});",
            sql_str(name),
            sql_str(&hash)
        );
        ids.push((name.clone(), id));
    }
    (ids, sql)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Completes a TLS handshake with `addr` and returns the SHA-256 fingerprint (lowercase hex) of the
/// certificate the server presented. Any certificate is accepted: the caller compares fingerprints.
pub fn tls_fingerprint(addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    let config = ptt::tls::client_config(ptt::tls::ServerTrust::AcceptInvalid);
    let name = ServerName::try_from("localhost").expect("server name");
    let mut conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut sock =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    sock.set_read_timeout(Some(timeout)).ok();
    sock.set_write_timeout(Some(timeout)).ok();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .map_err(|e| format!("TLS handshake: {e}"))?;
    }
    let fingerprint = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| hex(&ptt::tls::fingerprint(c.as_ref())))
        .ok_or("no server certificate")?;
    // Say goodbye properly so murmurd logs a clean close rather than an error.
    conn.send_close_notify();
    let _ = conn.complete_io(&mut sock);
    Ok(fingerprint)
}

/// Reads a PEM certificate and returns its fingerprint (checks [`TEST_CERT_SHA256`]).
pub fn fingerprint_of_pem(path: &Path) -> String {
    let der = CertificateDer::from_pem_file(path).expect("read PEM certificate");
    hex(&ptt::tls::fingerprint(&der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_constant_matches_the_committed_certificate() {
        assert_eq!(fingerprint_of_pem(&test_cert_path()), TEST_CERT_SHA256);
    }

    #[test]
    fn channel_rows_create_parents_first() {
        let (ids, sql) = channel_rows(&["North".into(), "South/Sub".into(), "It's".into()]);
        assert_eq!(
            ids,
            vec![
                ("North".to_string(), 1),
                ("South".to_string(), 2),
                ("South/Sub".to_string(), 3),
                ("It's".to_string(), 4)
            ]
        );
        assert!(sql.contains("VALUES (1, 3, 2, 'Sub', 1)"), "{sql}");
        assert!(sql.contains("'It''s'"), "{sql}");
    }
}
