//! A mock FHIR Bulk Data server (Bulk Data Access IG 2.0 + SMART Backend Services), written from the
//! IG for the end-to-end tests: kick-off at system / Patient / Group level (GET or POST `Parameters`),
//! status polling with `X-Progress`, a completion manifest with `output[]`, `deleted[]` and `error[]`,
//! NDJSON downloads (gzip when asked), `DELETE` of the status URL, `_type` and `_since`, paged
//! manifests (`link` `next`), and a token endpoint that verifies ES384 or RS384 client assertions
//! against a registered public JWK. A second listener on another port (another origin) can serve the
//! files, like a storage service, and records whether a token reached it.
//!
//! The data are the files of a Synthea export folder; `multiplier` simulates N times the patients by
//! copying every resource with a suffixed id. [`Faults`] injects the failures the client must survive.
//! It listens on 127.0.0.1 (ports 0) in its own runtime thread and stops when dropped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

/// Bytes per body chunk of a download.
const CHUNK: usize = 4 * 1024;
/// Lines per output file (larger types are split like real servers do).
const FILE_LINES: usize = 5000;

/// Failures to inject.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// 202 answers (with `X-Progress`) before the manifest.
    pub polls_before_ready: u32,
    /// A 429 on the kick-off with this `Retry-After`.
    pub kickoff_429: Option<String>,
    /// One 429 per entry on the first status polls, with that `Retry-After` value.
    pub status_429: Vec<String>,
    /// 500s with a transient OperationOutcome on status polls.
    pub status_transient_500: u32,
    /// 502s with an HTML body (a proxy) on status polls.
    pub status_proxy_502: u32,
    /// Files of this type answer 410 Gone.
    pub gone_type: Option<String>,
    /// The first download of each file of this type is cut off midway.
    pub cut_type: Option<String>,
    /// The manifest `count` of this type's files is 5 too high.
    pub wrong_count_type: Option<String>,
    /// OperationOutcomes in an `error[]` file.
    pub error_outcomes: u32,
    /// Pause between 4 KiB chunks of a download.
    pub chunk_delay: Duration,
    /// The first download of each file of this type finds its token revoked: the server forgets every
    /// token it issued and answers 401.
    pub unauthorized_type: Option<String>,
    /// The first download of each file of this type answers 503 with a transient OperationOutcome.
    pub unavailable_type: Option<String>,
    /// The manifest's file URLs point to a second listener (another port: another origin) that serves
    /// the files without a token, like a storage service.
    pub files_on_other_origin: bool,
    /// The manifest says `requiresAccessToken: false` and files are served without a token.
    pub files_without_token: bool,
    /// Files are served with `Accept-Ranges: bytes` and an `ETag`, and `Range: bytes=N-` is answered
    /// with `206 Partial Content`.
    pub accept_ranges: bool,
    /// File entries per manifest page (Bulk Data 2.0 `link` `next`); 0: one page.
    pub manifest_page_size: usize,
    /// Downloads of this type's files wait (before answering) until [`MockBulkServer::release_held`].
    pub hold_type: Option<String>,
}

/// A registered SMART Backend Services client.
#[derive(Debug, Clone)]
pub struct Client {
    pub client_id: String,
    /// The public JWK (ES384 with P-384, or RS384 with RSA) with its `kid`.
    pub public_jwk: Value,
    /// Lifetime of the access tokens issued.
    pub token_lifetime: Duration,
}

/// A registered client with a fixed test key (P-384): returns it and the path of its private JWKS file,
/// written into `dir`.
pub fn test_client(dir: &Path, token_lifetime: Duration) -> (Client, std::path::PathBuf) {
    let secret = p384::SecretKey::from_slice(&[11u8; 48]).expect("test key");
    let mut private: Value = serde_json::from_str(&secret.to_jwk_string()).expect("jwk");
    private["kid"] = json!("test-key-1");
    private["alg"] = json!("ES384");
    let mut public: Value =
        serde_json::from_str(&secret.public_key().to_jwk_string()).expect("jwk");
    public["kid"] = json!("test-key-1");
    let path = dir.join("private.jwks.json");
    std::fs::write(&path, json!({"keys": [private]}).to_string()).expect("write key");
    (
        Client {
            client_id: "fhirlake-test".into(),
            public_jwk: public,
            token_lifetime,
        },
        path,
    )
}

/// A registered client with a fixed RS384 test key (2048-bit RSA, a test fixture): returns it and the
/// path of its private key as a PKCS#8 PEM file written into `dir` (its `kid` is `rsa-test-key`).
pub fn test_rsa_client(dir: &Path, token_lifetime: Duration) -> (Client, std::path::PathBuf) {
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::PublicKeyParts;
    let pem = include_str!("rsa-test-key.pem");
    let private = rsa::RsaPrivateKey::from_pkcs8_pem(pem).expect("test RSA key");
    let public = private.to_public_key();
    let path = dir.join("rsa-key.pem");
    std::fs::write(&path, pem).expect("write key");
    (
        Client {
            client_id: "fhirlake-test".into(),
            public_jwk: json!({
                "kty": "RSA", "alg": "RS384", "kid": "rsa-test-key",
                "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
                "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
            }),
            token_lifetime,
        },
        path,
    )
}

/// What the server saw (for assertions).
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub kickoffs: u32,
    pub kickoff_methods: Vec<String>,
    pub status_polls: u32,
    pub status_deletes: u32,
    /// Requests per file name.
    pub file_requests: HashMap<String, u32>,
    /// File requests (on either listener) that carried an `Authorization` header.
    pub file_requests_with_token: u32,
    /// Requests the second listener (the other origin) received.
    pub other_origin_requests: u32,
    /// `(file name, first byte)` of each range request of a file.
    pub range_requests: Vec<(String, u64)>,
    /// Requests of manifest pages after the first.
    pub manifest_pages: u32,
    pub tokens_issued: u32,
    pub unauthorized: u32,
    pub since_values: Vec<Option<String>>,
}

#[derive(Debug, Clone)]
struct Resource {
    id: String,
    /// Shared with the export jobs that list it (a job keeps the version it exported).
    line: Arc<str>,
    changed: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug)]
struct ExportFile {
    name: String,
    resource_type: String,
    /// The NDJSON lines (the body is built when the file is downloaded: no second copy of the data).
    lines: Vec<Arc<str>>,
    count: usize,
    kind: &'static str,
}

#[derive(Debug)]
struct Job {
    polls: u32,
    transaction_time: String,
    request: String,
    files: Vec<ExportFile>,
}

#[derive(Debug, Default)]
struct Shared {
    faults: Faults,
    client: Option<Client>,
    data: BTreeMap<String, Vec<Resource>>,
    deletions: Vec<(String, String, chrono::DateTime<chrono::Utc>)>,
    jobs: HashMap<u64, Job>,
    next_job: u64,
    counters: Counters,
    tokens: HashMap<String, Instant>,
    jtis: HashSet<String>,
    cut_done: HashSet<String>,
    unauthorized_done: HashSet<String>,
    unavailable_done: HashSet<String>,
    /// `http://127.0.0.1:PORT` of the second listener.
    other_base: String,
    status_429_sent: usize,
    kickoff_429_sent: bool,
    /// Opened (given permits) by `release_held`.
    hold_gate: Option<Arc<tokio::sync::Semaphore>>,
}

/// The running mock server.
pub struct MockBulkServer {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MockBulkServer {
    /// Starts a server over the `*.ndjson.gz` files of `data_dir`, `multiplier` copies of each.
    pub fn start(data_dir: &Path, multiplier: u32, faults: Faults, client: Option<Client>) -> Self {
        let data = load(data_dir, multiplier.max(1));
        let shared = Arc::new(Mutex::new(Shared {
            faults,
            client,
            data,
            hold_gate: Some(Arc::new(tokio::sync::Semaphore::new(0))),
            ..Shared::default()
        }));
        let bind = || {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            listener.set_nonblocking(true).expect("nonblocking");
            listener
        };
        // The FHIR server, and a second origin (another port) for `files_on_other_origin`.
        let (main_listener, other_listener) = (bind(), bind());
        let addr = main_listener.local_addr().expect("local addr");
        let other_addr = other_listener.local_addr().expect("local addr");
        shared.lock().unwrap().other_base = format!("http://127.0.0.1:{}", other_addr.port());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let state = shared.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let serve = |listener: std::net::TcpListener, other_origin: bool| {
                    let state = state.clone();
                    async move {
                        let listener =
                            tokio::net::TcpListener::from_std(listener).expect("listener");
                        loop {
                            let Ok((stream, _)) = listener.accept().await else {
                                continue;
                            };
                            let state = state.clone();
                            tokio::spawn(async move {
                                let service = hyper::service::service_fn(move |req| {
                                    let state = state.clone();
                                    async move {
                                        let response = if other_origin {
                                            handle_other_origin(req, state).await
                                        } else {
                                            handle(req, state, addr).await
                                        };
                                        Ok::<_, Infallible>(response)
                                    }
                                });
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                    .await;
                            });
                        }
                    }
                };
                tokio::select! {
                    _ = rx => {}
                    () = serve(main_listener, false) => {}
                    () = serve(other_listener, true) => {}
                }
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
        });
        MockBulkServer {
            addr,
            shared,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT/fhir`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/fhir", self.addr.port())
    }

    /// What the server saw so far.
    pub fn counters(&self) -> Counters {
        self.shared.lock().unwrap().counters.clone()
    }

    /// Replaces the faults.
    pub fn set_faults(&self, faults: Faults) {
        let mut shared = self.shared.lock().unwrap();
        shared.faults = faults;
        shared.status_429_sent = 0;
        shared.kickoff_429_sent = false;
    }

    /// Lets the downloads held by [`Faults::hold_type`] go on (now and later).
    pub fn release_held(&self) {
        let shared = self.shared.lock().unwrap();
        if let Some(gate) = &shared.hold_gate {
            gate.add_permits(1_000);
        }
    }

    /// Resources per type that a full export of `types` (all when empty) returns now.
    pub fn expected_counts(&self, types: &[&str]) -> BTreeMap<String, usize> {
        let shared = self.shared.lock().unwrap();
        shared
            .data
            .iter()
            .filter(|(t, _)| types.is_empty() || types.contains(&t.as_str()))
            .map(|(t, r)| (t.clone(), r.len()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Ids of the first `n` resources of a type.
    pub fn ids(&self, resource_type: &str, n: usize) -> Vec<String> {
        let shared = self.shared.lock().unwrap();
        shared.data[resource_type]
            .iter()
            .take(n)
            .map(|r| r.id.clone())
            .collect()
    }

    /// Changes a resource now (it is in the next `_since` export): sets `meta.lastUpdated` to now and
    /// `field` to `value`.
    pub fn update(&self, resource_type: &str, id: &str, field: &str, value: Value) {
        let mut shared = self.shared.lock().unwrap();
        let now = chrono::Utc::now();
        let resource = shared
            .data
            .get_mut(resource_type)
            .and_then(|rs| rs.iter_mut().find(|r| r.id == id))
            .expect("resource to update");
        let mut doc: Value = serde_json::from_str(&resource.line).unwrap();
        doc[field] = value;
        doc["meta"] =
            json!({"lastUpdated": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)});
        resource.line = doc.to_string().into();
        resource.changed = Some(now);
    }

    /// Deletes a resource now (listed in `deleted[]` of the next `_since` export).
    pub fn delete(&self, resource_type: &str, id: &str) {
        let mut shared = self.shared.lock().unwrap();
        let now = chrono::Utc::now();
        if let Some(resources) = shared.data.get_mut(resource_type) {
            resources.retain(|r| r.id != id);
        }
        shared
            .deletions
            .push((resource_type.to_string(), id.to_string(), now));
    }
}

impl Drop for MockBulkServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn load(dir: &Path, multiplier: u32) -> BTreeMap<String, Vec<Resource>> {
    let mut data: BTreeMap<String, Vec<Resource>> = BTreeMap::new();
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .expect("data dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".ndjson.gz"))
        .collect();
    paths.sort();
    for path in paths {
        let file = std::fs::File::open(&path).expect("data file");
        let reader = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(file));
        for line in reader.lines() {
            let line = line.expect("line");
            if line.trim().is_empty() {
                continue;
            }
            let head: Value = serde_json::from_str(&line).expect("json");
            let resource_type = head["resourceType"].as_str().unwrap().to_string();
            let id = head["id"].as_str().unwrap().to_string();
            let entry = data.entry(resource_type).or_default();
            for copy in 0..multiplier {
                if copy == 0 {
                    entry.push(Resource {
                        id: id.clone(),
                        line: line.as_str().into(),
                        changed: None,
                    });
                } else {
                    // The first `"id":"…"` of a Synthea line is the resource's own id.
                    let new_id = format!("{id}-{copy}");
                    let line = line.replacen(
                        &format!("\"id\":\"{id}\""),
                        &format!("\"id\":\"{new_id}\""),
                        1,
                    );
                    entry.push(Resource {
                        id: new_id,
                        line: line.into(),
                        changed: None,
                    });
                }
            }
        }
    }
    data
}

type Body = BoxBody<Bytes, std::io::Error>;

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(
            Full::new(body.into())
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap()
}

fn outcome(status: StatusCode, code: &str, text: &str) -> Response<Body> {
    let body = json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text}]});
    full(status, "application/fhir+json", body.to_string())
}

/// A 429 with its OperationOutcome and the `Retry-After` value as given (any form).
fn throttled(text: &str, retry_after: &str) -> Response<Body> {
    let mut response = outcome(StatusCode::TOO_MANY_REQUESTS, "throttled", text);
    response
        .headers_mut()
        .insert("retry-after", retry_after.parse().unwrap());
    response
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<Shared>>,
    addr: SocketAddr,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let headers = req.headers().clone();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let base = format!("http://127.0.0.1:{}", addr.port());
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };

    if path == "/fhir/.well-known/smart-configuration" {
        return full(
            StatusCode::OK,
            "application/json",
            json!({
                "token_endpoint": format!("{base}/auth/token"),
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
                "scopes_supported": ["system/*.rs", "system/*.read"],
                "capabilities": ["client-confidential-asymmetric", "permission-v2"],
            })
            .to_string(),
        );
    }
    if path == "/auth/token" && method == Method::POST {
        return token(&state, &body, &format!("{base}/auth/token"));
    }
    // Every other endpoint needs a valid token when a client is registered.
    let is_file = path.starts_with("/fhir/bulkfiles/");
    if is_file && !header("authorization").is_empty() {
        state.lock().unwrap().counters.file_requests_with_token += 1;
    }
    {
        let mut shared = state.lock().unwrap();
        // With `requiresAccessToken: false` the files are open (IG: no token needed).
        let open_file = is_file && shared.faults.files_without_token;
        if shared.client.is_some() && !open_file {
            let token = header("authorization")
                .strip_prefix("Bearer ")
                .map(str::to_owned);
            let valid = token
                .as_ref()
                .and_then(|t| shared.tokens.get(t))
                .is_some_and(|expiry| Instant::now() < *expiry);
            if !valid {
                shared.counters.unauthorized += 1;
                return outcome(
                    StatusCode::UNAUTHORIZED,
                    "login",
                    "missing, unknown or expired access token",
                );
            }
        }
    }
    let is_group_export = path
        .strip_prefix("/fhir/Group/")
        .and_then(|rest| rest.strip_suffix("/$export"))
        .is_some_and(|id| !id.is_empty() && !id.contains('/'));
    if path == "/fhir/$export" || path == "/fhir/Patient/$export" || is_group_export {
        return kickoff(&state, &method, &path, &query, &headers, &body, &base);
    }
    if let Some((job, page)) = path
        .strip_prefix("/fhir/bulkstatus/")
        .and_then(|rest| rest.split_once("/page/"))
    {
        let (job, page) = (
            job.parse().unwrap_or(u64::MAX),
            page.parse().unwrap_or(usize::MAX),
        );
        let mut shared = state.lock().unwrap();
        shared.counters.manifest_pages += 1;
        return match manifest_page(&shared, job, page, &base) {
            Some(body) => full(StatusCode::OK, "application/json", body.to_string()),
            None => outcome(StatusCode::NOT_FOUND, "not-found", "no such manifest page"),
        };
    }
    if let Some(job) = path.strip_prefix("/fhir/bulkstatus/") {
        let job: u64 = job.parse().unwrap_or(u64::MAX);
        return status(&state, &method, job, &base);
    }
    if let Some(rest) = path.strip_prefix("/fhir/bulkfiles/") {
        let (job, name) = rest.split_once('/').unwrap_or(("", ""));
        return file(
            &state,
            job.parse().unwrap_or(u64::MAX),
            name,
            FileAsk::of(&headers),
        )
        .await;
    }
    outcome(StatusCode::NOT_FOUND, "not-found", "no such endpoint")
}

/// The second origin: serves the export files, without a token, and nothing else.
async fn handle_other_origin(req: Request<Incoming>, state: Arc<Mutex<Shared>>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let ask = FileAsk::of(req.headers());
    {
        let mut shared = state.lock().unwrap();
        shared.counters.other_origin_requests += 1;
        if req.headers().contains_key("authorization") {
            shared.counters.file_requests_with_token += 1;
        }
    }
    match path.strip_prefix("/fhir/bulkfiles/") {
        Some(rest) => {
            let (job, name) = rest.split_once('/').unwrap_or(("", ""));
            file(&state, job.parse().unwrap_or(u64::MAX), name, ask).await
        }
        None => outcome(StatusCode::NOT_FOUND, "not-found", "no such endpoint"),
    }
}

fn token(state: &Arc<Mutex<Shared>>, body: &[u8], audience: &str) -> Response<Body> {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let oauth = |error: &str, text: &str| {
        full(
            StatusCode::BAD_REQUEST,
            "application/json",
            json!({"error": error, "error_description": text}).to_string(),
        )
    };
    let mut shared = state.lock().unwrap();
    let Some(client) = shared.client.clone() else {
        return oauth("invalid_client", "no client registered");
    };
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth("unsupported_grant_type", "client_credentials expected");
    }
    if form.get("client_assertion_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    {
        return oauth("invalid_request", "client_assertion_type");
    }
    if !form.get("scope").is_some_and(|s| s.starts_with("system/")) {
        return oauth("invalid_scope", "system scopes only");
    }
    let Some(assertion) = form.get("client_assertion") else {
        return oauth("invalid_request", "no client_assertion");
    };
    let parts: Vec<&str> = assertion.split('.').collect();
    if parts.len() != 3 {
        return oauth("invalid_client", "not a JWS");
    }
    let decode = |s: &str| URL_SAFE_NO_PAD.decode(s).ok();
    let (Some(header), Some(claims), Some(signature)) =
        (decode(parts[0]), decode(parts[1]), decode(parts[2]))
    else {
        return oauth("invalid_client", "bad base64url");
    };
    let header: Value = serde_json::from_slice(&header).unwrap_or_default();
    let claims: Value = serde_json::from_slice(&claims).unwrap_or_default();
    let algorithm = match client.public_jwk["kty"].as_str() {
        Some("RSA") => "RS384",
        _ => "ES384",
    };
    if header["alg"] != algorithm || header["kid"] != client.public_jwk["kid"] {
        return oauth("invalid_client", "unknown key (alg/kid)");
    }
    let signed = format!("{}.{}", parts[0], parts[1]);
    let verified = if algorithm == "RS384" {
        // RSASSA-PKCS1-v1_5 with SHA-384 over the registered modulus and exponent.
        use rsa::signature::Verifier;
        let number = |member: &str| {
            let text = client.public_jwk[member].as_str().unwrap_or_default();
            rsa::BigUint::from_bytes_be(&URL_SAFE_NO_PAD.decode(text).expect("public jwk"))
        };
        let public = rsa::RsaPublicKey::new(number("n"), number("e")).expect("RSA jwk");
        let verifying = rsa::pkcs1v15::VerifyingKey::<sha2::Sha384>::new(public);
        rsa::pkcs1v15::Signature::try_from(signature.as_slice())
            .is_ok_and(|signature| verifying.verify(signed.as_bytes(), &signature).is_ok())
    } else {
        // JwkEcKey takes the key members only (no `kid`).
        use p384::ecdsa::signature::Verifier;
        let members = json!({"kty": "EC", "crv": "P-384", "x": client.public_jwk["x"], "y": client.public_jwk["y"]});
        let jwk: p384::elliptic_curve::JwkEcKey =
            serde_json::from_value(members).expect("public jwk");
        let verifying =
            p384::ecdsa::VerifyingKey::from(p384::PublicKey::from_jwk(&jwk).expect("P-384 jwk"));
        p384::ecdsa::Signature::from_slice(&signature)
            .is_ok_and(|signature| verifying.verify(signed.as_bytes(), &signature).is_ok())
    };
    if !verified {
        return oauth("invalid_client", "signature does not verify");
    }
    let now = chrono::Utc::now().timestamp();
    let exp = claims["exp"].as_i64().unwrap_or(0);
    if claims["iss"] != client.client_id.as_str()
        || claims["sub"] != client.client_id.as_str()
        || claims["aud"] != audience
        || exp <= now
        || exp > now + 305
    {
        return oauth("invalid_client", "iss/sub/aud/exp");
    }
    let jti = claims["jti"].as_str().unwrap_or_default().to_string();
    if jti.is_empty() || !shared.jtis.insert(jti) {
        return oauth("invalid_client", "jti missing or reused");
    }
    shared.counters.tokens_issued += 1;
    let token = format!("token-{}", shared.counters.tokens_issued);
    shared
        .tokens
        .insert(token.clone(), Instant::now() + client.token_lifetime);
    full(
        StatusCode::OK,
        "application/json",
        json!({
            "access_token": token, "token_type": "bearer",
            "expires_in": client.token_lifetime.as_secs_f64(), "scope": form["scope"],
        })
        .to_string(),
    )
}

fn kickoff(
    state: &Arc<Mutex<Shared>>,
    method: &Method,
    path: &str,
    query: &str,
    headers: &hyper::HeaderMap,
    body: &[u8],
    base: &str,
) -> Response<Body> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    if header("accept") != "application/fhir+json" {
        return outcome(
            StatusCode::BAD_REQUEST,
            "invalid",
            "Accept must be application/fhir+json",
        );
    }
    if !header("prefer").contains("respond-async") {
        return outcome(
            StatusCode::BAD_REQUEST,
            "invalid",
            "Prefer: respond-async required",
        );
    }
    let mut params: Vec<(String, String)> = Vec::new();
    if method == Method::GET {
        params = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
    } else if method == Method::POST {
        let doc: Value = match serde_json::from_slice(body) {
            Ok(doc) => doc,
            Err(_) => return outcome(StatusCode::BAD_REQUEST, "invalid", "body is not JSON"),
        };
        if doc["resourceType"] != "Parameters" {
            return outcome(
                StatusCode::BAD_REQUEST,
                "invalid",
                "body must be a Parameters resource",
            );
        }
        for p in doc["parameter"].as_array().cloned().unwrap_or_default() {
            let name = p["name"].as_str().unwrap_or_default().to_string();
            let value = ["valueString", "valueInstant", "valueCode"]
                .iter()
                .find_map(|k| p[*k].as_str().map(str::to_owned))
                .or_else(|| p["valueReference"]["reference"].as_str().map(str::to_owned))
                .unwrap_or_default();
            params.push((name, value));
        }
    } else {
        return outcome(
            StatusCode::METHOD_NOT_ALLOWED,
            "not-supported",
            "GET or POST",
        );
    }
    let mut shared = state.lock().unwrap();
    if let Some(retry_after) = shared.faults.kickoff_429.clone()
        && !shared.kickoff_429_sent
    {
        shared.kickoff_429_sent = true;
        return throttled("too many exports", &retry_after);
    }
    let types: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "_type")
        .flat_map(|(_, v)| v.split(',').map(str::to_owned).collect::<Vec<_>>())
        .collect();
    let since = params
        .iter()
        .find(|(k, _)| k == "_since")
        .map(|(_, v)| v.clone());
    let since_time = match since.as_deref().map(chrono::DateTime::parse_from_rfc3339) {
        Some(Ok(t)) => Some(t.with_timezone(&chrono::Utc)),
        Some(Err(_)) => {
            return outcome(
                StatusCode::BAD_REQUEST,
                "invalid",
                "_since is not an instant",
            );
        }
        None => None,
    };
    shared.counters.kickoffs += 1;
    shared
        .counters
        .kickoff_methods
        .push(format!("{method} {path}"));
    shared.counters.since_values.push(since.clone());
    let job_id = shared.next_job;
    shared.next_job += 1;
    let transaction_time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut files = Vec::new();
    for (resource_type, resources) in &shared.data {
        if !types.is_empty() && !types.contains(resource_type) {
            continue;
        }
        let selected: Vec<&Resource> = resources
            .iter()
            .filter(|r| match since_time {
                Some(since) => r.changed.is_some_and(|c| c > since),
                None => true,
            })
            .collect();
        for (part, chunk) in selected.chunks(FILE_LINES).enumerate() {
            files.push(ExportFile {
                name: format!("{}.{}.ndjson", resource_type, part + 1),
                resource_type: resource_type.clone(),
                lines: chunk.iter().map(|r| r.line.clone()).collect(),
                count: chunk.len(),
                kind: "output",
            });
        }
    }
    if let Some(since) = since_time {
        let deleted: Vec<String> = shared
            .deletions
            .iter()
            .filter(|(t, _, at)| *at > since && (types.is_empty() || types.contains(t)))
            .map(|(t, id, _)| {
                json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                    {"request": {"method": "DELETE", "url": format!("{t}/{id}")}}
                ]})
                .to_string()
            })
            .collect();
        if !deleted.is_empty() {
            files.push(ExportFile {
                name: "deleted.ndjson".into(),
                resource_type: "Bundle".into(),
                count: deleted.len(),
                lines: deleted.into_iter().map(Arc::from).collect(),
                kind: "deleted",
            });
        }
    }
    if shared.faults.error_outcomes > 0 {
        let lines: Vec<String> = (0..shared.faults.error_outcomes)
            .map(|i| json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing", "diagnostics": format!("export error number {i}")}]}).to_string())
            .collect();
        files.push(ExportFile {
            name: "errors.ndjson".into(),
            resource_type: "OperationOutcome".into(),
            count: lines.len(),
            lines: lines.into_iter().map(Arc::from).collect(),
            kind: "error",
        });
    }
    let request = format!(
        "{base}{path}{}",
        if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        }
    );
    shared.jobs.insert(
        job_id,
        Job {
            polls: 0,
            transaction_time,
            request,
            files,
        },
    );
    Response::builder()
        .status(StatusCode::ACCEPTED)
        .header(
            "content-location",
            format!("{base}/fhir/bulkstatus/{job_id}"),
        )
        .body(
            Full::new(Bytes::new())
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap()
}

fn status(state: &Arc<Mutex<Shared>>, method: &Method, job_id: u64, base: &str) -> Response<Body> {
    let mut shared = state.lock().unwrap();
    if method == Method::DELETE {
        return if shared.jobs.remove(&job_id).is_some() {
            shared.counters.status_deletes += 1;
            full(StatusCode::ACCEPTED, "application/fhir+json", "")
        } else {
            outcome(StatusCode::NOT_FOUND, "not-found", "no such export")
        };
    }
    shared.counters.status_polls += 1;
    if shared.faults.status_proxy_502 > 0 {
        shared.faults.status_proxy_502 -= 1;
        return full(
            StatusCode::BAD_GATEWAY,
            "text/html",
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
        );
    }
    if shared.faults.status_transient_500 > 0 {
        shared.faults.status_transient_500 -= 1;
        return outcome(
            StatusCode::INTERNAL_SERVER_ERROR,
            "transient",
            "database busy, retry",
        );
    }
    if shared.status_429_sent < shared.faults.status_429.len() {
        let value = shared.faults.status_429[shared.status_429_sent].clone();
        shared.status_429_sent += 1;
        return throttled("polling too fast", &value);
    }
    let faults = shared.faults.clone();
    let Some(job) = shared.jobs.get_mut(&job_id) else {
        return outcome(StatusCode::NOT_FOUND, "not-found", "no such export");
    };
    if job.polls < faults.polls_before_ready {
        job.polls += 1;
        let percent = 100 * job.polls / (faults.polls_before_ready + 1);
        return Response::builder()
            .status(StatusCode::ACCEPTED)
            .header("x-progress", format!("{percent}% complete"))
            .header("retry-after", "1")
            .body(
                Full::new(Bytes::new())
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .unwrap();
    }
    let body = manifest_page(&shared, job_id, 0, base).expect("job");
    full(StatusCode::OK, "application/json", body.to_string())
}

/// Page `page` (from 0) of a finished job's manifest: the entries of `output`, `deleted` and `error`
/// in that order, `manifest_page_size` per page, each page but the last with a `next` link.
fn manifest_page(shared: &Shared, job_id: u64, page: usize, base: &str) -> Option<Value> {
    let faults = &shared.faults;
    let job = shared.jobs.get(&job_id)?;
    let file_base = if faults.files_on_other_origin {
        shared.other_base.as_str()
    } else {
        base
    };
    let entry = |f: &ExportFile| {
        let count = if faults.wrong_count_type.as_deref() == Some(f.resource_type.as_str()) {
            f.count + 5
        } else {
            f.count
        };
        json!({"type": f.resource_type, "url": format!("{file_base}/fhir/bulkfiles/{job_id}/{}", f.name), "count": count})
    };
    let files: Vec<&ExportFile> = ["output", "deleted", "error"]
        .iter()
        .flat_map(|kind| job.files.iter().filter(move |f| f.kind == *kind))
        .collect();
    let size = match faults.manifest_page_size {
        0 => files.len().max(1),
        n => n,
    };
    let pages = files.len().div_ceil(size).max(1);
    if page >= pages {
        return None;
    }
    let on_page = &files[(page * size).min(files.len())..((page + 1) * size).min(files.len())];
    let of = |kind: &str| {
        on_page
            .iter()
            .filter(|f| f.kind == kind)
            .map(|f| entry(f))
            .collect::<Vec<_>>()
    };
    let mut manifest = json!({
        "transactionTime": job.transaction_time,
        "request": job.request,
        "requiresAccessToken": shared.client.is_some() && !faults.files_without_token,
        "outputOrganizedBy": "",
        "output": of("output"),
        "deleted": of("deleted"),
        "error": of("error"),
        "extension": {"mock": true},
    });
    if page + 1 < pages {
        manifest["link"] = json!([{"relation": "next", "url": format!("{base}/fhir/bulkstatus/{job_id}/page/{}", page + 1)}]);
    }
    Some(manifest)
}

/// What a file request asks for besides the file.
struct FileAsk {
    /// `Accept-Encoding` includes gzip.
    gzip: bool,
    /// `Range: bytes=N-` (the only form the client sends; other forms are ignored, as RFC 9110 allows).
    range_start: Option<u64>,
    /// `If-Range`.
    if_range: Option<String>,
}

impl FileAsk {
    fn of(headers: &hyper::HeaderMap) -> Self {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        FileAsk {
            gzip: header("accept-encoding").is_some_and(|v| v.contains("gzip")),
            range_start: header("range")
                .and_then(|v| v.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok()),
            if_range: header("if-range"),
        }
    }
}

async fn file(state: &Arc<Mutex<Shared>>, job_id: u64, name: &str, ask: FileAsk) -> Response<Body> {
    let held = {
        let mut shared = state.lock().unwrap();
        *shared
            .counters
            .file_requests
            .entry(name.to_string())
            .or_default() += 1;
        let held_type = shared.faults.hold_type.clone();
        let is_held = shared
            .jobs
            .get(&job_id)
            .and_then(|j| j.files.iter().find(|f| f.name == name))
            .is_some_and(|f| held_type.as_deref() == Some(f.resource_type.as_str()));
        shared.hold_gate.clone().filter(|_| is_held)
    };
    if let Some(gate) = held {
        // A permit is returned when dropped: once released, every held download goes on.
        let _permit = gate.acquire().await;
    }
    let (lines, cut, delay, ranges) = {
        let mut shared = state.lock().unwrap();
        let faults = shared.faults.clone();
        let Some(file) = shared
            .jobs
            .get(&job_id)
            .and_then(|j| j.files.iter().find(|f| f.name == name))
        else {
            return outcome(StatusCode::NOT_FOUND, "not-found", "no such file");
        };
        if faults.gone_type.as_deref() == Some(file.resource_type.as_str()) {
            return outcome(StatusCode::GONE, "not-found", "file expired");
        }
        let (lines, resource_type) = (file.lines.clone(), file.resource_type.clone());
        let is = |fault: &Option<String>| fault.as_deref() == Some(resource_type.as_str());
        let (unauthorized, unavailable) =
            (is(&faults.unauthorized_type), is(&faults.unavailable_type));
        if unauthorized && shared.unauthorized_done.insert(name.to_string()) {
            // The tokens were revoked (or expired early): the client needs a new one.
            shared.tokens.clear();
            shared.counters.unauthorized += 1;
            return outcome(StatusCode::UNAUTHORIZED, "login", "access token revoked");
        }
        if unavailable && shared.unavailable_done.insert(name.to_string()) {
            return outcome(
                StatusCode::SERVICE_UNAVAILABLE,
                "transient",
                "storage busy, retry",
            );
        }
        let cut = is(&faults.cut_type) && shared.cut_done.insert(name.to_string());
        (lines, cut, faults.chunk_delay, faults.accept_ranges)
    };
    let mut body = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines {
        body.extend_from_slice(line.as_bytes());
        body.push(b'\n');
    }
    let body = Bytes::from(body);
    // Ranges (RFC 9110 14): of the identity body; `If-Range` with another validator means the
    // whole file.
    let etag = format!("\"{job_id}-{name}\"");
    let range_start = ask
        .range_start
        .filter(|_| ranges && ask.if_range.as_ref().is_none_or(|v| *v == etag));
    if let Some(start) = range_start {
        let length = body.len() as u64;
        state
            .lock()
            .unwrap()
            .counters
            .range_requests
            .push((name.to_string(), start));
        if start >= length {
            return Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header("content-range", format!("bytes */{length}"))
                .body(
                    Full::new(Bytes::new())
                        .map_err(|never| match never {})
                        .boxed(),
                )
                .unwrap();
        }
        let rest = body.slice(start as usize..);
        let chunks: Vec<Bytes> = (0..rest.len())
            .step_by(CHUNK)
            .map(|at| rest.slice(at..(at + CHUNK).min(rest.len())))
            .collect();
        return Response::builder()
            .status(StatusCode::PARTIAL_CONTENT)
            .header("content-type", "application/fhir+ndjson")
            .header(
                "content-range",
                format!("bytes {start}-{}/{length}", length - 1),
            )
            .header("content-length", rest.len())
            .header("etag", etag)
            .body(BodyExt::boxed(StreamBody::new(futures::stream::iter(
                chunks.into_iter().map(|c| Ok(Frame::data(c))),
            ))))
            .unwrap();
    }
    let gzip = ask.gzip;
    let body = if gzip {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&body).unwrap();
        Bytes::from(encoder.finish().unwrap())
    } else {
        body
    };
    let length = body.len();
    let send_until = if cut { length / 2 } else { length };
    let chunks: Vec<Bytes> = (0..send_until)
        .step_by(CHUNK)
        .map(|start| body.slice(start..(start + CHUNK).min(send_until)))
        .collect();
    let stream = futures::stream::unfold(
        (chunks.into_iter(), cut, delay),
        |(mut chunks, cut, delay)| async move {
            match chunks.next() {
                Some(chunk) => {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    Some((Ok(Frame::data(chunk)), (chunks, cut, delay)))
                }
                None if cut => {
                    // Pending once first, so that hyper sends what it has buffered (headers and
                    // half the body) before the connection is cut.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Some((
                        Err(std::io::Error::other("connection cut")),
                        (chunks, false, delay),
                    ))
                }
                None => None,
            }
        },
    );
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/fhir+ndjson")
        .header("content-length", length);
    if gzip {
        response = response.header("content-encoding", "gzip");
    }
    if ranges {
        response = response
            .header("accept-ranges", "bytes")
            .header("etag", etag);
    }
    response
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}
