//! A throwaway PostgreSQL server for tests and benchmarks: a cluster in a
//! temp dir, listening on a free loopback port, stopped on drop.
//!
//! The server binaries come from Debian's `postgresql` package, which
//! `cargo xtask setup` installs. PostgreSQL refuses to run as root, so as
//! root the cluster belongs to the `postgres` user the package creates.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    options: String,
}

/// `/usr/lib/postgresql/<newest>/bin`, or `BOTBOX_PG_BIN`.
fn server_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("BOTBOX_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((v, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL server binaries (initdb, pg_ctl) were not found under \
             /usr/lib/postgresql/*/bin: run `cargo xtask setup`, which installs the \
             Debian package `postgresql` (or set BOTBOX_PG_BIN to their folder)"
        ),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A CA, a server certificate it signed (for 127.0.0.1 and localhost), and
/// an unrelated CA, made with the `openssl` command line in `dir` (Debian's
/// `postgresql` brings it, through `ssl-cert`).
fn make_certificates(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("tls dir");
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl (Debian package `openssl`)");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for ca in ["ca", "wrong-ca"] {
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=botbox test {ca}"),
        ]);
    }
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName = IP:127.0.0.1, DNS:localhost\nbasicConstraints = CA:FALSE\n",
    )
    .expect("write server.ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    // PostgreSQL refuses a key others can read.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod server.key");
    dir.to_path_buf()
}

impl PgServer {
    /// A cluster for tests: no fsync (a killed or stopped server still keeps
    /// every commit; only an OS crash would lose them).
    pub fn start() -> PgServer {
        PgServer::start_with("-c fsync=off")
    }

    /// A test cluster that counts the statements it runs
    /// (`pg_stat_statements`, which Debian's `postgresql` package ships):
    /// see [`PgServer::calls_of`].
    pub fn start_counting() -> PgServer {
        let server = PgServer::start_with(
            "-c fsync=off -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all",
        );
        server
            .client()
            .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .expect("pg_stat_statements");
        server
    }

    /// How many times statements containing `needle` ran, on a server from
    /// [`PgServer::start_counting`]. `PgOutbox::mergeable`, the backlog
    /// read, is the only statement with `NOT planned`.
    pub fn calls_of(&self, needle: &str) -> i64 {
        self.client()
            .query_one(
                "SELECT COALESCE(SUM(calls), 0)::bigint FROM pg_stat_statements WHERE strpos(query, $1) > 0",
                &[&needle],
            )
            .expect("pg_stat_statements")
            .get(0)
    }

    /// A durable cluster whose WAL writer flushes on its own at most every
    /// 10 s, so that WAL written but not flushed stays so for a while: see
    /// [`PgServer::wal_unflushed`].
    pub fn start_lazy_wal_writer() -> PgServer {
        PgServer::start_with("-c wal_writer_delay=10s")
    }

    /// Whether the server holds WAL it has not flushed to disk yet, asked on
    /// `client`: after a commit that waited for its flush, no (unless
    /// something else wrote since); after one that did not, yes until the
    /// WAL writer's next flush.
    pub fn wal_unflushed(client: &mut postgres::Client) -> bool {
        client
            .query_one(
                "SELECT pg_current_wal_flush_lsn() < pg_current_wal_insert_lsn()",
                &[],
            )
            .expect("WAL positions")
            .get(0)
    }

    /// A cluster as durable as a production one, for benchmarks.
    pub fn start_durable() -> PgServer {
        PgServer::start_with("")
    }

    /// A test cluster with `ssl=on`: a certificate for 127.0.0.1 and
    /// `localhost`, signed by a CA made here ([`PgServer::ca`]); another CA
    /// that signed nothing is at [`PgServer::wrong_ca`].
    pub fn start_tls() -> PgServer {
        PgServer::start_with("-c fsync=off -c ssl=on")
    }

    /// `dir/tls/ca.crt`: the CA that signed the server's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("tls").join("ca.crt")
    }

    /// `dir/tls/wrong-ca.crt`: a CA that signed nothing of this server's.
    pub fn wrong_ca(&self) -> PathBuf {
        self.dir.path().join("tls").join("wrong-ca.crt")
    }

    fn start_with(extra: &str) -> PgServer {
        let bin = server_bin();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut extra = extra.to_string();
        if extra.contains("ssl=on") {
            let tls = make_certificates(&dir.path().join("tls"));
            extra.push_str(&format!(
                " -c ssl_cert_file={} -c ssl_key_file={}",
                tls.join("server.crt").display(),
                tls.join("server.key").display()
            ));
        }
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(
                status.success(),
                "cannot give {} to the `postgres` user (does it exist? `cargo xtask setup` installs the postgresql package that creates it)",
                dir.path().display()
            );
        }
        let port = free_port();
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} -c max_connections=100 {extra}",
            dir.path().display()
        );
        let server = PgServer {
            dir,
            bin,
            port,
            options,
        };
        let data = server.data();
        server.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        server.start_again();
        server
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = cmd.args(args).output().unwrap_or_else(|e| {
            panic!("cannot run {}: {e}", program.display());
        });
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the server (again, after [`PgServer::stop`]).
    pub fn start_again(&self) {
        let log = self.dir.path().join("server.log").display().to_string();
        let data = self.data();
        self.run(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-w", "-o", &self.options, "start"],
        );
    }

    /// Stops the server the way an operator would (`-m fast`: sessions are
    /// cut off, commits kept).
    pub fn stop(&self) {
        let data = self.data();
        self.run("pg_ctl", &["-D", &data, "-w", "-m", "fast", "stop"]);
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Writes the connection string to `dir/pg-url`, for
    /// `postgres_url = { file = "pg-url" }`.
    pub fn write_url(&self, dir: &Path) {
        std::fs::write(dir.join("pg-url"), self.url()).expect("write pg-url");
    }

    /// A `[storage]` section for a host on this server.
    pub fn storage_section(&self, lease: &str) -> String {
        format!(
            "[storage]\nbackend = \"postgres\"\npostgres_url = {{ file = \"pg-url\" }}\nlease = \"{lease}\"\n"
        )
    }

    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url(), postgres::NoTls).expect("connect to test PostgreSQL")
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.data();
        let program = self.bin.join("pg_ctl");
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let _ = cmd
            .args(["-D", &data, "-m", "immediate", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}
