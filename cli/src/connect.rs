//! Connecting to a broker, and the request metadata every call carries.
//!
//! With several servers the first that accepts a connection is used: a connection
//! failure moves on to the next, while anything the connected server answers (including
//! a gRPC error status) is final.

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

/// Connection settings shared by every command.
#[derive(Debug, Clone)]
pub struct Conn {
    servers: Vec<String>,
    /// Deadline of each call and each connection attempt.
    pub timeout: Duration,
}

impl Conn {
    /// Settings for these `host:port` (or `http://host:port`) addresses.
    pub fn new(servers: &[String], timeout: Duration) -> Result<Self> {
        let servers = clean_addrs(servers);
        if servers.is_empty() {
            bail!("no server given (--server host:port or RAFTMQ_SERVER)");
        }
        Ok(Conn { servers, timeout })
    }

    /// A channel to the first server that accepts a connection.
    pub async fn channel(&self) -> Result<Channel> {
        let mut failures = Vec::new();
        for server in &self.servers {
            let endpoint = endpoint(server, self.timeout)?;
            match connect(&endpoint, self.timeout).await {
                Ok(channel) => return Ok(channel),
                Err(e) => failures.push(format!("{server}: {e}")),
            }
        }
        bail!("no server reachable ({})", failures.join("; "))
    }
}

/// Trims the addresses and drops empty ones.
pub fn clean_addrs(addrs: &[String]) -> Vec<String> {
    addrs
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Connects to one endpoint within `timeout`; the error is one line.
pub async fn connect(endpoint: &Endpoint, timeout: Duration) -> std::result::Result<Channel, String> {
    match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(error_chain(&e)),
        Err(_) => Err("connect timed out".to_string()),
    }
}

/// Connects to one `host:port` (or `http://host:port`) address; a malformed address is a
/// failure like a refused connection.
pub async fn connect_addr(server: &str, timeout: Duration) -> std::result::Result<Channel, String> {
    let endpoint = endpoint(server, timeout).map_err(|e| format!("{e:#}"))?;
    connect(&endpoint, timeout).await
}

/// The tonic endpoint of one address.
fn endpoint(server: &str, timeout: Duration) -> Result<Endpoint> {
    let uri = if server.contains("://") {
        server.to_string()
    } else {
        format!("http://{server}")
    };
    Ok(Endpoint::from_shared(uri)
        .with_context(|| format!("bad server address {server:?}"))?
        .connect_timeout(timeout)
        .tcp_nodelay(true))
}

/// An error and its sources on one line (tonic's transport errors hide the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Wraps `msg` in a request with the given deadline and the metadata headers the
/// official RocketMQ 5 clients send.
pub fn request<T>(msg: T, deadline: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(deadline);
    let md = req.metadata_mut();
    let headers: [(&'static str, String); 5] = [
        ("x-mq-client-id", client_id().to_string()),
        ("x-mq-language", "RUST".to_string()),
        ("x-mq-protocol", "v2".to_string()),
        ("x-mq-client-version", env!("CARGO_PKG_VERSION").to_string()),
        ("x-mq-request-id", format!("{:032x}", rand::random::<u128>())),
    ];
    for (key, value) in headers {
        // A value that is not valid ASCII metadata (an odd host name) is left out.
        if let Ok(v) = MetadataValue::try_from(value.as_str()) {
            md.insert(key, v);
        }
    }
    req
}

/// This process's client id, `host@pid@random`, as RocketMQ clients form theirs.
pub fn client_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        format!(
            "{}@{}@{:08x}",
            host_name(),
            std::process::id(),
            rand::random::<u32>()
        )
    })
}

/// The machine's host name, or "localhost" when it cannot be read.
pub fn host_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        ["/proc/sys/kernel/hostname", "/etc/hostname"]
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "localhost".to_string())
    })
}

/// A gRPC status as one line: `NOT_FOUND: topic "x" does not exist`.
pub fn status_line(status: &tonic::Status) -> String {
    let message = status.message().replace(['\n', '\r'], " ");
    if message.is_empty() {
        code_name(status.code()).to_string()
    } else {
        format!("{}: {message}", code_name(status.code()))
    }
}

/// The canonical upper-case name of a gRPC status code.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Turns a gRPC status into an error naming the call.
pub fn rpc_error(call: &str) -> impl FnOnce(tonic::Status) -> anyhow::Error + '_ {
    move |status| anyhow::anyhow!("{call} failed: {}", status_line(&status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_trimmed_and_required() {
        let conn =
            Conn::new(&[" a:1 ".into(), "".into(), "b:2".into()], Duration::from_secs(1)).expect("conn");
        assert_eq!(conn.servers, vec!["a:1".to_string(), "b:2".to_string()]);
        assert!(Conn::new(&[" ".into()], Duration::from_secs(1)).is_err());
    }

    #[test]
    fn request_carries_deadline_and_headers() {
        let req = request((), Duration::from_secs(3));
        let md = req.metadata();
        assert_eq!(
            md.get("grpc-timeout").and_then(|v| v.to_str().ok()),
            Some("3000000u")
        );
        assert_eq!(md.get("x-mq-protocol").and_then(|v| v.to_str().ok()), Some("v2"));
        assert_eq!(
            md.get("x-mq-language").and_then(|v| v.to_str().ok()),
            Some("RUST")
        );
        assert!(md.get("x-mq-client-id").is_some());
    }

    #[test]
    fn status_lines() {
        let s = tonic::Status::not_found("topic \"x\"\ndoes not exist");
        assert_eq!(status_line(&s), "NOT_FOUND: topic \"x\" does not exist");
        assert_eq!(status_line(&tonic::Status::unavailable("")), "UNAVAILABLE");
    }

    #[tokio::test]
    async fn unreachable_servers_are_all_named() {
        // Port 1 on loopback: nothing listens there, so the connection is refused.
        let conn = Conn::new(
            &["127.0.0.1:1".into(), "127.0.0.1:1".into()],
            Duration::from_secs(2),
        )
        .expect("conn");
        let err = conn.channel().await.expect_err("nothing listens");
        let text = format!("{err:#}");
        assert!(text.starts_with("no server reachable"), "{text}");
        assert_eq!(text.matches("127.0.0.1:1:").count(), 2, "{text}");
    }
}
