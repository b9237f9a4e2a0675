//! The admin listener's cluster views: `GET /cluster`, and `GET /extensions/N/devices` across
//! nodes (each node holding N is asked for its local devices, with a timeout; the calls carry a
//! token authenticated with the cluster `secret`, like the marks of cluster branches).

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

use super::Shared;
use crate::core::cluster::{verify_mark, write_mark};

/// The header that authenticates a node's admin call to another node.
pub const TOKEN_HEADER: &str = "x-sipfork-cluster";
/// Prefix of the node-to-node device query (answers with this node's devices only).
pub const LOCAL_PREFIX: &str = "/cluster/local/extensions/";
/// How long a node waits for another node's device list.
pub const NODE_TIMEOUT: Duration = Duration::from_millis(800);

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The token for an admin call to `path`.
pub fn token(secret: &[u8], path: &str) -> String {
    let mut out = Vec::new();
    write_mark(secret, b"admin", path.as_bytes(), b"", now_secs(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Checks the token of an admin call to `path`.
pub fn token_ok(secret: &[u8], path: &str, token: Option<&[u8]>) -> bool {
    token.is_some_and(|t| verify_mark(secret, b"admin", path.as_bytes(), b"", t, now_secs()))
}

/// Asks node `admin` for its local devices of `number`.
pub async fn remote_devices(
    secret: Vec<u8>,
    admin: SocketAddr,
    number: String,
) -> Result<serde_json::Value, String> {
    let path = format!("{LOCAL_PREFIX}{number}/devices");
    let tok = token(&secret, &path);
    let call = async {
        let stream = tokio::net::TcpStream::connect(admin)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        let req = Request::get(&path)
            .header(hyper::header::HOST, admin.to_string())
            .header(TOKEN_HEADER, tok)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(format!(
                "{status}: {}",
                String::from_utf8_lossy(&body).trim()
            ));
        }
        serde_json::from_slice(&body).map_err(|e| format!("answer: {e}"))
    };
    tokio::time::timeout(NODE_TIMEOUT, call)
        .await
        .map_err(|_| format!("no answer within {} ms", NODE_TIMEOUT.as_millis()))?
}

/// Merges this node's report with the other holders' answers (asked at once, each with
/// [`NODE_TIMEOUT`]): every device gets its `node`, and `nodes` says which node answered.
pub async fn merged_devices(
    shared: &Shared,
    number: &str,
    local: serde_json::Value,
) -> serde_json::Value {
    let mut devices = Vec::new();
    let tag = |v: &serde_json::Value, node: &str, out: &mut Vec<serde_json::Value>| {
        for d in v["devices"].as_array().into_iter().flatten() {
            let mut d = d.clone();
            d["node"] = serde_json::Value::from(node);
            out.push(d);
        }
    };
    tag(&local, &shared.cfg.node, &mut devices);
    let mut nodes = vec![serde_json::json!({
        "node": shared.cfg.node, "ok": true, "devices": devices.len(),
    })];
    let dir = shared.directory.load();
    let mut asks = tokio::task::JoinSet::new();
    for (i, n) in dir
        .holders(number.as_bytes())
        .filter(|n| n.name != shared.cfg.node)
        .enumerate()
    {
        let (name, admin) = (n.name.clone(), n.admin);
        let (secret, number) = (shared.cfg.secret.clone(), number.to_owned());
        asks.spawn(async move {
            let answer = match admin {
                Some(a) => remote_devices(secret, a, number).await,
                None => Err("the node has no admin listener".to_owned()),
            };
            (i, name, answer)
        });
    }
    let mut answers = asks.join_all().await;
    answers.sort_by_key(|a| a.0);
    for (_, name, answer) in answers {
        match answer {
            Ok(v) => {
                let before = devices.len();
                tag(&v, &name, &mut devices);
                nodes.push(serde_json::json!({
                    "node": name, "ok": true, "devices": devices.len() - before,
                }));
            }
            Err(e) => nodes.push(serde_json::json!({
                "node": name, "ok": false, "error": e,
            })),
        }
    }
    let mut out = local;
    out["devices"] = serde_json::Value::from(devices);
    out["nodes"] = serde_json::Value::from(nodes);
    out
}
