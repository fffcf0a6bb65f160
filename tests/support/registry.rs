//! A throwaway OCI registry for tests: Debian's `docker-registry` (the CNCF
//! Distribution server, `registry:2`) serving a temp dir on a free loopback
//! port, stopped on drop. `cargo xtask setup` installs the package.
//!
//! Also the raw registry API (blob upload, manifest PUT) for the tests that
//! play a hostile or careless publisher, which a well-behaved client such
//! as `botbox plugin push` would never produce.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest as _;

/// The binary Debian's `docker-registry` package installs.
const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

pub struct RegistryServer {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl RegistryServer {
    pub fn start() -> RegistryServer {
        assert!(
            std::path::Path::new(REGISTRY_BIN).is_file(),
            "{REGISTRY_BIN} is missing: run `cargo xtask setup`, which installs the Debian \
             package `docker-registry`"
        );
        let dir = tempfile::tempdir().expect("registry dir");
        let mut server = RegistryServer {
            port: free_port(),
            dir,
            child: None,
        };
        server.start_again();
        server
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    /// Starts the server (again, after [`RegistryServer::stop`]) on the same
    /// port and storage, and waits until it accepts connections.
    pub fn start_again(&mut self) {
        let storage = self.dir.path().join("storage");
        std::fs::create_dir_all(&storage).expect("registry storage dir");
        let config = format!(
            "version: 0.1\n\
             log:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{}\n",
            storage.display(),
            self.port
        );
        std::fs::write(self.config_path(), config).expect("write registry config");
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start docker-registry");
        self.child = Some(child);
        // Readiness, not a timed assertion: the limit only turns a server
        // that never comes up into a failure instead of a hang.
        let limit = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("docker-registry exited before serving: {status}");
            }
            assert!(Instant::now() < limit, "docker-registry never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server; its storage stays for [`RegistryServer::start_again`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `oci://127.0.0.1:PORT/REPO:TAG`.
    pub fn tag(&self, repo: &str, tag: &str) -> String {
        format!("oci://{}/{repo}:{tag}", self.host())
    }

    /// `oci://127.0.0.1:PORT/REPO@DIGEST`.
    pub fn by_digest(&self, repo: &str, digest: &str) -> String {
        format!("oci://{}/{repo}@{digest}", self.host())
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/v2/{path}", self.host())
    }

    /// Uploads a blob (monolithic upload); returns its digest.
    pub async fn put_blob(&self, repo: &str, bytes: Vec<u8>) -> String {
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));
        let client = reqwest::Client::new();
        let started = client
            .post(self.url(&format!("{repo}/blobs/uploads/")))
            .send()
            .await
            .expect("start upload");
        assert_eq!(started.status().as_u16(), 202, "start upload");
        let location = started
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .expect("upload location")
            .to_string();
        let location = if location.starts_with("http") {
            location
        } else {
            format!("http://{}{location}", self.host())
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let done = client
            .put(format!("{location}{separator}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .expect("finish upload");
        assert_eq!(done.status().as_u16(), 201, "finish upload");
        digest
    }

    /// PUTs a manifest under `reference` (a tag); returns the digest the
    /// registry gives it.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        manifest: &serde_json::Value,
    ) -> String {
        let body = serde_json::to_vec(manifest).unwrap();
        let response = reqwest::Client::new()
            .put(self.url(&format!("{repo}/manifests/{reference}")))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(body)
            .send()
            .await
            .expect("put manifest");
        let status = response.status().as_u16();
        let digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|d| d.to_str().ok())
            .map(str::to_string);
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, 201, "put manifest: {text}");
        digest.expect("the registry names the manifest's digest")
    }

    /// The manifest under `reference`, as JSON.
    pub async fn manifest(&self, repo: &str, reference: &str) -> serde_json::Value {
        reqwest::Client::new()
            .get(self.url(&format!("{repo}/manifests/{reference}")))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .expect("get manifest")
            .json()
            .await
            .expect("manifest JSON")
    }

    /// A blob, whole.
    pub async fn blob(&self, repo: &str, digest: &str) -> Vec<u8> {
        reqwest::Client::new()
            .get(self.url(&format!("{repo}/blobs/{digest}")))
            .send()
            .await
            .expect("get blob")
            .bytes()
            .await
            .expect("blob bytes")
            .to_vec()
    }
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        self.stop();
    }
}
