//! Clients known to a node: the settings each announced on its Telemetry stream (group,
//! FIFO consumption, retry policy), found by the `x-mq-client-id` header of later calls.
//! Bounded: beyond `max` clients the least recently seen is forgotten.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use raftmq_proto::rocketmq::v2 as pb;

/// What a node remembers of a client.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub settings: pb::Settings,
    pub last_seen: Instant,
}

impl ClientInfo {
    /// Whether the client consumes FIFO (its subscription says so).
    pub fn fifo(&self) -> bool {
        match &self.settings.pub_sub {
            Some(pb::settings::PubSub::Subscription(s)) => s.fifo.unwrap_or(false),
            _ => false,
        }
    }

    /// Whether the client announced itself as a push consumer.
    pub fn is_push_consumer(&self) -> bool {
        self.settings.client_type == Some(pb::ClientType::PushConsumer as i32)
    }

    /// The most deliveries the client's retry policy allows, if it announced one.
    pub fn max_attempts(&self) -> Option<u32> {
        let p = self.settings.backoff_policy.as_ref()?;
        u32::try_from(p.max_attempts).ok().filter(|a| *a > 0)
    }
}

/// The clients known to this node.
#[derive(Debug)]
pub struct ClientRegistry {
    max: usize,
    clients: Mutex<HashMap<String, ClientInfo>>,
}

impl ClientRegistry {
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ClientInfo>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the settings a client announced.
    pub fn update(&self, client_id: &str, settings: pb::Settings) {
        let mut clients = self.lock();
        if !clients.contains_key(client_id) && clients.len() >= self.max {
            let oldest = clients
                .iter()
                .min_by_key(|(_, c)| c.last_seen)
                .map(|(id, _)| id.clone());
            if let Some(id) = oldest {
                clients.remove(&id);
            }
        }
        let info = ClientInfo {
            settings,
            last_seen: Instant::now(),
        };
        clients.insert(client_id.to_owned(), info);
    }

    /// Notes that a client is alive (heartbeat).
    pub fn touch(&self, client_id: &str) {
        if let Some(c) = self.lock().get_mut(client_id) {
            c.last_seen = Instant::now();
        }
    }

    pub fn get(&self, client_id: &str) -> Option<ClientInfo> {
        self.lock().get(client_id).cloned()
    }

    pub fn remove(&self, client_id: &str) {
        self.lock().remove(client_id);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_settings_and_forgets_the_oldest_beyond_the_bound() {
        let r = ClientRegistry::new(2);
        let fifo = pb::Settings {
            pub_sub: Some(pb::settings::PubSub::Subscription(pb::Subscription {
                fifo: Some(true),
                ..Default::default()
            })),
            backoff_policy: Some(pb::RetryPolicy {
                max_attempts: 5,
                ..Default::default()
            }),
            ..Default::default()
        };
        r.update("a", fifo);
        r.update("b", pb::Settings::default());
        let a = r.get("a").expect("a");
        assert!(a.fifo());
        assert_eq!(a.max_attempts(), Some(5));
        assert_eq!(
            r.get("b").map(|b| (b.fifo(), b.max_attempts())),
            Some((false, None))
        );
        r.update("c", pb::Settings::default());
        assert_eq!(r.len(), 2);
        assert!(r.get("a").is_none(), "the least recently seen is forgotten");
        r.remove("b");
        assert!(r.get("b").is_none());
    }
}
