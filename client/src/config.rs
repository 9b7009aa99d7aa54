//! What every client component is configured with.

use std::time::Duration;

use crate::error::ClientError;
use crate::error::Result;

/// RocketMQ's default request timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How often routes are refreshed (RocketMQ: 30 s).
pub const DEFAULT_ROUTE_REFRESH: Duration = Duration::from_secs(30);
/// How often a client heartbeats to every broker it knows (RocketMQ: 10 s).
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

/// Shared configuration of producers and consumers. Build it with
/// [`ClientConfig::builder`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Name servers (or broker nodes) that answer QueryRoute, tried in order: a dead one
    /// makes the client use the next.
    pub access_points: Vec<String>,
    /// Deadline of one call. Default 3 s.
    pub request_timeout: Duration,
    /// How often routes of known topics are refreshed. Default 30 s.
    pub route_refresh: Duration,
    /// How often the client heartbeats to the brokers of its routes. Default 10 s.
    pub heartbeat_interval: Duration,
    /// The namespace every resource belongs to. Default empty.
    pub namespace: String,
    /// The prefix of the clients' ids (`x-mq-client-id`); generated unless set. Each
    /// producer or consumer started with this configuration sends `<client_id>@<n>`, n
    /// counting the clients of the process, so two of them never share an id (a broker
    /// would take them for one group member, and one's termination notice would remove
    /// the other).
    pub client_id: String,
}

/// Builds a [`ClientConfig`].
#[derive(Debug, Clone)]
pub struct ClientConfigBuilder {
    config: ClientConfig,
}

impl ClientConfig {
    /// A builder with RocketMQ's defaults and no access point.
    pub fn builder() -> ClientConfigBuilder {
        ClientConfigBuilder {
            config: ClientConfig {
                access_points: Vec::new(),
                request_timeout: DEFAULT_REQUEST_TIMEOUT,
                route_refresh: DEFAULT_ROUTE_REFRESH,
                heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
                namespace: String::new(),
                client_id: crate::rpc::new_client_id(),
            },
        }
    }

    /// Checks the rules across fields.
    pub fn validate(&self) -> Result<()> {
        if self.access_points.is_empty() {
            return Err(ClientError::InvalidArgument(
                "no access point: give at least one name server (or broker) address".into(),
            ));
        }
        for a in &self.access_points {
            let ok = a
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return Err(ClientError::InvalidArgument(format!(
                    "access point {a:?} is not host:port"
                )));
            }
        }
        if self.request_timeout.is_zero() || self.route_refresh.is_zero() || self.heartbeat_interval.is_zero()
        {
            return Err(ClientError::InvalidArgument(
                "request_timeout, route_refresh and heartbeat_interval must be positive".into(),
            ));
        }
        Ok(())
    }
}

impl ClientConfigBuilder {
    /// Name servers (or broker addresses), `host:port`, tried in order. A single string may
    /// hold several, separated by `,` or `;`.
    pub fn access_points<I, S>(mut self, points: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.config.access_points = points
            .into_iter()
            .flat_map(|s| {
                s.as_ref()
                    .split([',', ';'])
                    .map(|p| p.trim().trim_start_matches("http://").to_owned())
                    .collect::<Vec<_>>()
            })
            .filter(|p| !p.is_empty())
            .collect();
        self
    }

    /// Deadline of one call.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// How often routes are refreshed.
    pub fn route_refresh(mut self, every: Duration) -> Self {
        self.config.route_refresh = every;
        self
    }

    /// How often the client heartbeats.
    pub fn heartbeat_interval(mut self, every: Duration) -> Self {
        self.config.heartbeat_interval = every;
        self
    }

    /// The namespace of every resource.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config.namespace = namespace.into();
        self
    }

    /// A fixed client id prefix instead of a generated one (see
    /// [`ClientConfig::client_id`]).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.config.client_id = id.into();
        self
    }

    /// The checked configuration.
    pub fn build(self) -> Result<ClientConfig> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_points_are_split_and_checked() {
        let c = ClientConfig::builder()
            .access_points(["127.0.0.1:9876;127.0.0.1:9877", "http://ns3:9876"])
            .build()
            .expect("valid");
        assert_eq!(c.access_points, ["127.0.0.1:9876", "127.0.0.1:9877", "ns3:9876"]);
        assert_eq!(c.request_timeout, Duration::from_secs(3));
        assert!(ClientConfig::builder().build().is_err(), "no access point");
        assert!(
            ClientConfig::builder()
                .access_points(["nowhere"])
                .build()
                .is_err()
        );
        assert!(
            ClientConfig::builder()
                .access_points(["a:1"])
                .request_timeout(Duration::ZERO)
                .build()
                .is_err()
        );
    }
}
