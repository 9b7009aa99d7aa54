//! Building a [`Producer`]: where the name servers are, timeouts, retries, limits.

use std::time::Duration;

use crate::config::ClientConfig;
use crate::config::ClientConfigBuilder;
use crate::error::ClientError;
use crate::error::Result;
use crate::message::DEFAULT_MAX_BODY_SIZE;

use super::Producer;
use super::retry::RetryPolicy;

/// What a producer does besides the shared [`ClientConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerOptions {
    /// The producer group. RocketMQ 5's protocol carries no producer group on sends; it
    /// names the producer in logs.
    pub producer_group: String,
    /// Retries of a failed send.
    pub retry: RetryPolicy,
    /// Largest message body, and largest sum of the bodies of a batch. Default 4 MiB.
    pub max_message_size: usize,
    /// Whether slow or failing broker groups are avoided for a while (see
    /// [`super::fault`]). Default on.
    pub fault_avoidance: bool,
    /// Merging of concurrent async sends into shared requests (see
    /// [`super::coalesce`]). Default on.
    pub coalesce: super::CoalesceOptions,
}

impl Default for ProducerOptions {
    fn default() -> Self {
        Self {
            producer_group: "DEFAULT_PRODUCER".into(),
            retry: RetryPolicy::default(),
            max_message_size: DEFAULT_MAX_BODY_SIZE,
            fault_avoidance: true,
            coalesce: super::CoalesceOptions::default(),
        }
    }
}

/// Builds a [`Producer`]; see [`Producer::builder`].
#[derive(Debug, Clone)]
pub struct ProducerBuilder {
    config: ClientConfigBuilder,
    options: ProducerOptions,
    topics: Vec<String>,
}

impl ProducerBuilder {
    pub(super) fn new() -> Self {
        Self {
            config: ClientConfig::builder(),
            options: ProducerOptions::default(),
            topics: Vec::new(),
        }
    }

    /// Name servers, tried in order (or a broker's address, which answers routes of its
    /// own group): `host:port`, several in one string separated by `,` or `;`.
    pub fn access_points<I, S>(mut self, points: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.config = self.config.access_points(points);
        self
    }

    /// The producer group.
    pub fn producer_group(mut self, group: impl Into<String>) -> Self {
        self.options.producer_group = group.into();
        self
    }

    /// Deadline of one call (a send attempt to one address, a route query). Default 3 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config = self.config.request_timeout(timeout);
        self
    }

    /// The namespace of topics.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config = self.config.namespace(namespace);
        self
    }

    /// Retries of a failed sync send (RocketMQ's default 2: 3 attempts in all). Oneway
    /// sends never retry.
    pub fn retries(mut self, retries: u32) -> Self {
        self.options.retry.max_attempts = retries.saturating_add(1);
        self
    }

    /// Whether a send whose attempt's outcome is unknown (timed out, connection lost) is
    /// tried again — at least once, possibly stored twice under one message id. Default
    /// true, as RocketMQ.
    pub fn retry_unknown_outcome(mut self, retry: bool) -> Self {
        self.options.retry.retry_unknown_outcome = retry;
        self
    }

    /// The backoff before retrying a group tried already (a topic on one group, an
    /// ordered send): `first`, doubled on each retry up to `max`. Default 100 ms, 1 s.
    /// With more [retries](Self::retries) this rides out a leader election (1.5–1.8 s
    /// with raftmq's defaults).
    pub fn retry_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.options.retry.backoff = first;
        self.options.retry.max_backoff = max;
        self
    }

    /// Largest message body and largest sum of a batch's bodies. Default 4 MiB.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.options.max_message_size = bytes;
        self
    }

    /// How concurrent async sends are merged into shared requests (see
    /// [`super::coalesce`]); `CoalesceOptions { enabled: false, .. }` sends each alone.
    pub fn coalesce(mut self, options: super::CoalesceOptions) -> Self {
        self.options.coalesce = options;
        self
    }

    /// Whether slow or failing broker groups are avoided for a while. Default true.
    pub fn fault_avoidance(mut self, on: bool) -> Self {
        self.options.fault_avoidance = on;
        self
    }

    /// Topics whose routes are fetched at start (a missing one fails the start).
    pub fn topics<I, S>(mut self, topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.topics = topics.into_iter().map(Into::into).collect();
        self
    }

    /// Any other setting of the shared configuration (route refresh, heartbeats, client
    /// id, ...).
    pub fn client(mut self, f: impl FnOnce(ClientConfigBuilder) -> ClientConfigBuilder) -> Self {
        self.config = f(self.config);
        self
    }

    /// Checks the settings, starts the producer's session (route refresh and heartbeats)
    /// and fetches the routes of the [topics](Self::topics). Runs on the current Tokio
    /// runtime.
    pub async fn start(self) -> Result<Producer> {
        let config = self.config.build()?;
        check_options(&self.options)?;
        let producer = Producer::with(config, self.options)?;
        for topic in &self.topics {
            if let Err(e) = producer.session().routes.get(topic).await {
                producer.shutdown().await;
                return Err(e);
            }
        }
        Ok(producer)
    }
}

fn check_options(o: &ProducerOptions) -> Result<()> {
    if o.producer_group.trim().is_empty() {
        return Err(ClientError::InvalidArgument("the producer group is empty".into()));
    }
    if o.retry.max_attempts == 0 {
        return Err(ClientError::InvalidArgument(
            "max_attempts must be positive".into(),
        ));
    }
    let c = &o.coalesce;
    if c.max_in_flight == 0 || c.max_messages == 0 || c.max_bytes == 0 {
        return Err(ClientError::InvalidArgument(
            "coalesce: max_in_flight, max_messages and max_bytes must be positive".into(),
        ));
    }
    if o.max_message_size == 0 {
        return Err(ClientError::InvalidArgument(
            "max_message_size must be positive".into(),
        ));
    }
    Ok(())
}
