//! The PostgreSQL store over TLS (rustls): `sslmode=require` and `verify-full` connect, a
//! certificate from another CA is refused with a clear error.
//!
//! The set-up turns TLS on in the local PostgreSQL server (as this machine's kind allows:
//! a superuser over loopback with trust auth): a CA and a server certificate for
//! `localhost`/`127.0.0.1` are made on the fly, written next to the server's data directory
//! (owned by the server's user, so they survive a restart), and `ssl` is switched on with
//! `ALTER SYSTEM` and a configuration reload. Connections without TLS keep working.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use neon_steward::store;
use sqlx::Connection;
use tokio::sync::OnceCell;

fn admin_url() -> String {
    std::env::var("NEON_STEWARD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Where the server's TLS files and the test CA live, once TLS is on.
struct Tls {
    dir: PathBuf,
}

impl Tls {
    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

fn new_ca(name: &str) -> Ca {
    let key = rcgen::KeyPair::generate().expect("a key pair");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("the CA signs itself");
    Ca { cert, key }
}

fn write(path: &Path, text: &str, mode: u32, owner: (u32, u32)) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    std::os::unix::fs::chown(path, Some(owner.0), Some(owner.1)).unwrap_or_else(|e| {
        panic!(
            "chown {}: {e} (the test set-up runs as root)",
            path.display()
        )
    });
}

static TLS: OnceCell<Tls> = OnceCell::const_new();

/// Turns TLS on in the local server (once per test binary).
async fn tls_on() -> &'static Tls {
    TLS.get_or_init(|| async {
        let mut admin = sqlx::PgConnection::connect(&admin_url())
            .await
            .expect("the PostgreSQL test server is reachable: start PostgreSQL on 127.0.0.1:5432 (trust auth) or set NEON_STEWARD_TEST_POSTGRES to an admin URL");
        let data: String = sqlx::query_scalar("SHOW data_directory")
            .fetch_one(&mut admin)
            .await
            .expect("the test connects as a superuser (it turns TLS on)");
        let meta = std::fs::metadata(&data).unwrap_or_else(|e| panic!("{data}: {e}"));
        let owner = (meta.uid(), meta.gid());
        let dir = Path::new(&data)
            .parent()
            .expect("the data directory has a parent")
            .join("neon-steward-test-tls");
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(owner.0), Some(owner.1)).unwrap();

        let ca = new_ca("neon-steward test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        let server = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
        write(&dir.join("ca.pem"), &ca.cert.pem(), 0o644, owner);
        write(&dir.join("server.crt"), &server.pem(), 0o644, owner);
        write(&dir.join("server.key"), &key.serialize_pem(), 0o600, owner);

        for (setting, value) in [
            ("ssl_cert_file", dir.join("server.crt")),
            ("ssl_key_file", dir.join("server.key")),
        ] {
            sqlx::query(&format!(
                "ALTER SYSTEM SET {setting} = '{}'",
                value.display()
            ))
            .execute(&mut admin)
            .await
            .unwrap();
        }
        sqlx::query("ALTER SYSTEM SET ssl = on")
            .execute(&mut admin)
            .await
            .unwrap();
        let reloaded: bool = sqlx::query_scalar("SELECT pg_reload_conf()")
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert!(reloaded);
        // The reload is asynchronous: wait (bounded) until new connections get TLS.
        let url = format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            admin_url().replace("127.0.0.1", "localhost"),
            dir.join("ca.pem").display()
        );
        let mut last = String::new();
        for _ in 0..100 {
            match sqlx::PgConnection::connect(&url).await {
                Ok(_) => return Tls { dir },
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("PostgreSQL did not turn TLS on: {last}");
    })
    .await
}

/// A fresh database for one test, and its URL without parameters.
async fn fresh_db() -> (String, String) {
    let mut admin = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
    let name = format!("steward_tls_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let base = admin_url().rsplit_once('/').unwrap().0.to_string();
    (format!("{base}/{name}"), name)
}

async fn drop_db(name: &str) {
    let mut admin = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
}

/// Whether the store's own connections are encrypted (asked through the store's URL).
async fn encrypted(url: &str) -> bool {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut c)
        .await
        .unwrap()
}

#[tokio::test]
async fn require_and_verify_full_connect_over_tls() {
    let tls = tls_on().await;
    let (url, name) = fresh_db().await;
    let require = format!("{url}?sslmode=require");
    let s = store::open(&require)
        .await
        .expect("sslmode=require connects");
    s.ping().await.unwrap();
    assert!(encrypted(&require).await);

    let full = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        url.replace("127.0.0.1", "localhost"),
        tls.ca().display()
    );
    let s = store::open(&full)
        .await
        .expect("sslmode=verify-full connects");
    s.ping().await.unwrap();
    assert!(encrypted(&full).await);
    drop(s);
    drop_db(&name).await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_clearly() {
    tls_on().await;
    let (url, name) = fresh_db().await;
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, new_ca("some other CA").cert.pem()).unwrap();
    let url = format!(
        "{}?sslmode=verify-ca&sslrootcert={}",
        url.replace("postgres@", "postgres:hunter2@"),
        other.display()
    );
    let err = store::open(&url).await.err().expect("refused").to_string();
    assert!(err.contains("cannot open postgres database"), "{err}");
    assert!(err.contains("TLS"), "names TLS as the cause: {err}");
    assert!(err.contains("sslrootcert"), "says what to check: {err}");
    assert!(!err.contains("hunter2"), "{err}");
    drop_db(&name).await;
}
