//! What every producer and consumer runs underneath: the RPC layer, the route cache, and
//! two background loops — refreshing the routes of known topics every `route_refresh`,
//! and heartbeating every broker address of those routes every `heartbeat_interval` —
//! until [`Session::shutdown`], which also tells every broker the client is gone.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::join_all;
use raftmq_proto::rocketmq::v2 as pb;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::config::ClientConfig;
use crate::error::Result;
use crate::route::Routes;
use crate::rpc::Rpc;

/// Which kind of client a session serves (what heartbeats announce).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientKind {
    /// A producer.
    Producer,
    /// A push consumer of consumer group `group`.
    PushConsumer {
        /// The consumer group.
        group: String,
    },
    /// A simple consumer of consumer group `group`.
    SimpleConsumer {
        /// The consumer group.
        group: String,
    },
    /// A pull consumer of consumer group `group`.
    PullConsumer {
        /// The consumer group.
        group: String,
    },
}

impl ClientKind {
    /// The protocol's client type.
    pub fn client_type(&self) -> pb::ClientType {
        match self {
            ClientKind::Producer => pb::ClientType::Producer,
            ClientKind::PushConsumer { .. } => pb::ClientType::PushConsumer,
            ClientKind::SimpleConsumer { .. } => pb::ClientType::SimpleConsumer,
            ClientKind::PullConsumer { .. } => pb::ClientType::PullConsumer,
        }
    }

    /// The consumer group, for consumers.
    pub fn group(&self) -> Option<&str> {
        match self {
            ClientKind::Producer => None,
            ClientKind::PushConsumer { group }
            | ClientKind::SimpleConsumer { group }
            | ClientKind::PullConsumer { group } => Some(group),
        }
    }
}

/// The shared core of one producer or consumer.
#[derive(Debug)]
pub struct Session {
    /// Channels and request headers.
    pub rpc: Arc<Rpc>,
    /// The route cache.
    pub routes: Arc<Routes>,
    /// What kind of client this is.
    pub kind: ClientKind,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Session {
    /// Checks `config` and starts the background loops.
    pub fn start(config: ClientConfig, kind: ClientKind) -> Result<Arc<Self>> {
        config.validate()?;
        let rpc = Arc::new(Rpc::new(config));
        let routes = Arc::new(Routes::new(rpc.clone()));
        let (stop, _) = watch::channel(false);
        let session = Arc::new(Self {
            rpc,
            routes,
            kind,
            stop,
            tasks: Mutex::new(Vec::new()),
        });
        let client_id = session.rpc.client_id().to_owned();
        let refresh = tokio::spawn(
            refresh_loop(session.clone()).instrument(tracing::info_span!("route_refresh", client_id)),
        );
        let client_id = session.rpc.client_id().to_owned();
        let heartbeat = tokio::spawn(
            heartbeat_loop(session.clone()).instrument(tracing::info_span!("heartbeat", client_id)),
        );
        session.tasks().extend([refresh, heartbeat]);
        Ok(session)
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The client's configuration.
    pub fn config(&self) -> &ClientConfig {
        self.rpc.config()
    }

    /// A receiver that turns true when the session stops.
    pub fn stopped(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Whether [`Session::shutdown`] has begun.
    pub fn is_stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Stops the loops and notifies every known broker address that the client is gone.
    pub async fn shutdown(&self) {
        if self.stop.send_replace(true) {
            return;
        }
        let tasks: Vec<_> = self.tasks().drain(..).collect();
        for t in tasks {
            t.abort();
        }
        let group = self.kind.group().map(|g| self.resource(g));
        let calls = self.routes.all_endpoints().into_iter().map(|addr| {
            let req = pb::NotifyClientTerminationRequest { group: group.clone() };
            async move {
                let Ok(mut c) = self.rpc.messaging(&addr) else {
                    return;
                };
                let timeout = self.config().request_timeout;
                if let Err(e) = c.notify_client_termination(self.rpc.request(req, timeout)).await {
                    tracing::debug!(%addr, error = %e, "termination notice failed");
                }
            }
        });
        join_all(calls).await;
    }

    /// A resource of this client's namespace.
    pub fn resource(&self, name: &str) -> pb::Resource {
        pb::Resource {
            resource_namespace: self.config().namespace.clone(),
            name: name.to_owned(),
        }
    }

    /// One heartbeat to every address of every known route.
    pub async fn heartbeat_once(&self) {
        let req = pb::HeartbeatRequest {
            group: self.kind.group().map(|g| self.resource(g)),
            client_type: self.kind.client_type() as i32,
        };
        let calls = self.routes.all_endpoints().into_iter().map(|addr| {
            let req = req.clone();
            async move {
                let Ok(mut c) = self.rpc.messaging(&addr) else {
                    return;
                };
                let timeout = self.config().request_timeout;
                match c.heartbeat(self.rpc.request(req, timeout)).await {
                    Ok(r) => {
                        let code = r.into_inner().status.map_or(0, |s| s.code);
                        if code != pb::Code::Ok as i32 {
                            tracing::warn!(%addr, code, "heartbeat refused");
                        }
                    }
                    Err(e) => tracing::debug!(%addr, error = %e, "heartbeat failed"),
                }
            }
        });
        join_all(calls).await;
    }
}

async fn refresh_loop(session: Arc<Session>) {
    let every = session.config().route_refresh;
    let mut stop = session.stopped();
    loop {
        if sleep_or_stop(every, &mut stop).await {
            return;
        }
        for topic in session.routes.topics() {
            if let Err(e) = session.routes.refresh(&topic).await {
                tracing::warn!(topic, error = %e, "route refresh failed; keeping the last route");
            }
        }
    }
}

async fn heartbeat_loop(session: Arc<Session>) {
    let every = session.config().heartbeat_interval;
    let mut stop = session.stopped();
    loop {
        session.heartbeat_once().await;
        if sleep_or_stop(every, &mut stop).await {
            return;
        }
    }
}

/// Sleeps `d`; true if the session stopped meanwhile.
pub async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(d) => false,
        r = stop.wait_for(|s| *s) => { let _ = r; true }
    };
    stopped || *stop.borrow()
}
