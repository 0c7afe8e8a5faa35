//! One module per side: each translates its protocol to and from the hub, and gives the
//! process what [`Side`] asks — so `run` and the HTTP port never name a side, and a new side
//! is one module plus one line in [`start_all`].
//!
//! The PTT side starts first: the others ride on its accounts (a meeting's dial-in is a PTT
//! account's channel) and find it in the [`SideContext`].

pub mod console;
pub mod meeting;
pub mod ptt;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::config::Config;
use crate::events::Platform;
use crate::hub::command::BoxFuture;
use crate::hub::{self, EventBus, SideCommands};
use crate::recording::Recorder;

/// What every side gives the process.
pub trait Side: Send + Sync + std::fmt::Debug + 'static {
    /// Starts the side: its sessions, tasks and listeners' state.
    fn start(ctx: &SideContext<'_>) -> anyhow::Result<Arc<Self>>
    where
        Self: Sized;

    /// Which side it is (the key of its health, events and commands).
    fn kind(&self) -> hub::Side;

    /// Its HTTP routes, with their own state, for the one HTTP port. `shutdown` turns true
    /// when the bridge stops: long-lived streams end then.
    fn routes(&self, shutdown: &watch::Receiver<bool>) -> SideRoutes {
        let _ = shutdown;
        SideRoutes::default()
    }

    /// Its entry in `/healthz` (`sides.<kind>`).
    fn health(&self) -> Value;

    /// Whether it works as configured; `false` makes `/healthz` say `degraded`.
    fn healthy(&self) -> bool {
        true
    }

    /// What the web page's live view shows of it: top-level fields of `/api/state`.
    fn live_view(&self) -> Map<String, Value> {
        Map::new()
    }

    /// Brings counters kept outside the metrics registry up to date before a scrape.
    fn export_metrics(&self) {}

    /// Its handler for platform commands to its parties, if it takes any.
    fn commands(&self) -> Option<Arc<dyn SideCommands>> {
        None
    }

    /// Ends its sessions cleanly within `grace` when the bridge stops.
    fn shutdown(&self, grace: Duration) -> BoxFuture<()> {
        let _ = grace;
        Box::pin(async {})
    }
}

/// A side's HTTP routes, by who may use them.
#[derive(Debug, Default)]
pub struct SideRoutes {
    /// Routes its own protocol authenticates (a WebSocket login, an app's sign).
    pub public: Router,
    /// Routes only operators may use (the HTTP port checks their credentials).
    pub operator: Router,
}

/// What a side starts with.
#[derive(Debug)]
pub struct SideContext<'a> {
    /// The whole configuration.
    pub config: &'a Config,
    /// Hub events.
    pub bus: Arc<EventBus>,
    /// Platform surfaces: call records, command routing.
    pub platform: &'a Platform,
    /// Where talk bursts are recorded, if anywhere.
    pub recorder: Option<Recorder>,
    /// The PTT side, once started (every other side starts after it).
    pub ptt: Option<Arc<ptt::PttSide>>,
    /// Routing to other cluster nodes (a cluster node only).
    pub route: Option<Arc<crate::cluster::route::Route>>,
    /// The console servers' admin sessions, once started: a cluster node leases each.
    pub admins: Vec<crate::cluster::resource::AdminSession>,
}

/// Starts every side, PTT first, and registers their platform commands.
pub fn start_all(ctx: &mut SideContext<'_>) -> anyhow::Result<Vec<Arc<dyn Side>>> {
    let ptt = ptt::PttSide::start(ctx)?;
    ctx.ptt = Some(ptt.clone());
    let console = console::ConsoleSide::start(ctx)?;
    ctx.admins = console.admin_leases();
    let sides: Vec<Arc<dyn Side>> = vec![ptt, console, meeting::MeetingSide::start(ctx)?];
    for side in &sides {
        if let Some(handler) = side.commands() {
            ctx.platform.commands.register(side.kind(), handler);
        }
    }
    Ok(sides)
}
