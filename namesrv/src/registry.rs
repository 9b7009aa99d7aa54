//! The name server's shared state: the route table behind a lock, with the checks every
//! caller needs. Time comes in as `now`, so tests drive it.

use std::sync::Mutex;
use std::sync::MutexGuard;
use std::time::Instant;

use crate::error::NamesrvError;
use crate::registration::Registration;
use crate::registration::check_topic_name;
use crate::route_table::GroupRoute;
use crate::route_table::GroupView;
use crate::route_table::Registered;
use crate::route_table::RouteTable;

/// The registry shared by the name server's services.
#[derive(Debug)]
pub struct Registry {
    table: Mutex<RouteTable>,
}

impl Registry {
    pub fn new(table: RouteTable) -> Self {
        Self {
            table: Mutex::new(table),
        }
    }

    fn table(&self) -> MutexGuard<'_, RouteTable> {
        // The table is consistent after every call; a panic elsewhere does not poison it.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long a silent member stays, ms.
    pub fn expiry_ms(&self) -> u64 {
        u64::try_from(self.table().expiry().as_millis()).unwrap_or(u64::MAX)
    }

    /// Records a checked registration.
    pub fn register(&self, reg: Registration, now: Instant) -> Result<Registered, NamesrvError> {
        self.table()
            .register(reg, now)
            .map_err(|full| NamesrvError::Full(full.0))
    }

    /// Where `topic`'s queues are: at least one group, or an error.
    pub fn route(&self, topic: &str, now: Instant) -> Result<Vec<GroupRoute>, NamesrvError> {
        check_topic_name(topic).map_err(NamesrvError::InvalidTopic)?;
        let routes = self.table().route(topic, now);
        if routes.is_empty() {
            return Err(NamesrvError::TopicNotFound(topic.to_owned()));
        }
        Ok(routes)
    }

    /// Every group with a live member.
    pub fn groups(&self, now: Instant) -> Vec<GroupView> {
        self.table().groups(now)
    }

    /// Whether a live group hosts `topic` as a FIFO topic.
    pub fn is_fifo(&self, topic: &str, now: Instant) -> bool {
        self.table().is_fifo(topic, now)
    }

    /// Drops expired members; returns them.
    pub fn expire(&self, now: Instant) -> Vec<(String, u64)> {
        self.table().expire(now)
    }
}
