//! The wasm component adapter: one [`Slot`] per plugin instance holds its own
//! `Store`, enforces the per-call deadline and memory cap, disables the
//! instance on a fault and re-instantiates it with backoff.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use wasmtime::{Engine, Store, UpdateDeadline};

use super::convert;
use super::health::{FaultCause, Health, HealthCell};
use super::spec::{LoadError, PluginSpec, RuntimeOptions, EPOCH_TICK};
use super::types::*;
use super::{FailoverAction, PluginError, Strategy};
use crate::caps::output::InstanceOutput;
use crate::caps::{HostState, ResolvedGrants, Services};
use crate::wit::action::FailoverAction as ActionBindings;
use crate::wit::action::FailoverActionPre;
use crate::wit::strategy::standby::plugin::types as wit;
use crate::wit::strategy::{ReplicationStrategy, ReplicationStrategyPre};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What differs between the two plugin worlds.
pub(crate) trait World: 'static {
    type Pre: Send + Sync;
    type Bindings: Send + Sync;
    fn instantiate<'a>(
        pre: &'a Self::Pre,
        store: &'a mut Store<HostState>,
    ) -> BoxFuture<'a, wasmtime::Result<Self::Bindings>>;
    fn configure<'a>(
        b: &'a Self::Bindings,
        store: &'a mut Store<HostState>,
        settings: &'a [wit::Setting],
    ) -> BoxFuture<'a, wasmtime::Result<Result<(), wit::Error>>>;
}

/// The `replication-strategy` world.
pub(crate) struct StrategyWorld;

impl World for StrategyWorld {
    type Pre = ReplicationStrategyPre<HostState>;
    type Bindings = ReplicationStrategy;
    fn instantiate<'a>(
        pre: &'a Self::Pre,
        store: &'a mut Store<HostState>,
    ) -> BoxFuture<'a, wasmtime::Result<Self::Bindings>> {
        Box::pin(pre.instantiate_async(store))
    }
    fn configure<'a>(
        b: &'a Self::Bindings,
        store: &'a mut Store<HostState>,
        settings: &'a [wit::Setting],
    ) -> BoxFuture<'a, wasmtime::Result<Result<(), wit::Error>>> {
        Box::pin(b.standby_plugin_lifecycle().call_configure(store, settings))
    }
}

/// The `failover-action` world.
pub(crate) struct ActionWorld;

impl World for ActionWorld {
    type Pre = FailoverActionPre<HostState>;
    type Bindings = ActionBindings;
    fn instantiate<'a>(
        pre: &'a Self::Pre,
        store: &'a mut Store<HostState>,
    ) -> BoxFuture<'a, wasmtime::Result<Self::Bindings>> {
        Box::pin(pre.instantiate_async(store))
    }
    fn configure<'a>(
        b: &'a Self::Bindings,
        store: &'a mut Store<HostState>,
        settings: &'a [wit::Setting],
    ) -> BoxFuture<'a, wasmtime::Result<Result<(), wit::Error>>> {
        Box::pin(b.standby_plugin_lifecycle().call_configure(store, settings))
    }
}

struct Live<W: World> {
    instance: Option<(Store<HostState>, W::Bindings)>,
    retry_at: Option<Instant>,
    cause: Option<FaultCause>,
}

/// One plugin instance and everything needed to re-create it.
pub(crate) struct Slot<W: World> {
    name: Arc<str>,
    engine: Engine,
    pre: W::Pre,
    grants: Arc<ResolvedGrants>,
    services: Arc<Services>,
    settings: Vec<wit::Setting>,
    options: RuntimeOptions,
    live: tokio::sync::Mutex<Live<W>>,
    health: Arc<HealthCell>,
    /// Wakes a running preemptible call (tick, on-receive) to stop it.
    preempt: tokio::sync::Notify,
}

impl<W: World> Slot<W> {
    /// Instantiate and configure for the first time; failures are load errors.
    pub(crate) async fn start(
        engine: &Engine,
        options: &RuntimeOptions,
        spec: PluginSpec,
        services: Arc<Services>,
        pre: W::Pre,
    ) -> Result<Self, LoadError> {
        let slot = Self {
            name: Arc::from(spec.name.as_str()),
            engine: engine.clone(),
            pre,
            grants: spec.grants,
            services,
            settings: spec.settings.iter().map(convert::setting).collect(),
            options: options.clone(),
            live: tokio::sync::Mutex::new(Live {
                instance: None,
                retry_at: None,
                cause: None,
            }),
            health: Arc::new(HealthCell::new(&spec.name)),
            preempt: tokio::sync::Notify::new(),
        };
        match slot.instantiate().await {
            Ok(instance) => {
                slot.live.lock().await.instance = Some(instance);
                Ok(slot)
            }
            Err(Startup::Refused(error)) => Err(LoadError::Configure {
                plugin: spec.name,
                error,
            }),
            Err(Startup::Fault(cause)) => Err(LoadError::StartupFault {
                plugin: spec.name,
                cause,
            }),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn health(&self) -> Health {
        self.health.snapshot()
    }

    pub(crate) fn health_handle(&self) -> Arc<HealthCell> {
        self.health.clone()
    }

    fn deadline_ticks(&self) -> u32 {
        (self.options.call_deadline_ms / EPOCH_TICK.as_millis() as u64)
            .clamp(1, u64::from(u32::MAX)) as u32
    }

    fn new_store(&self) -> Store<HostState> {
        let state = HostState::new(
            self.name.clone(),
            self.grants.clone(),
            self.services.clone(),
            self.options.memory_cap,
            self.health.output(),
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(|mut ctx| {
            let limits = &mut ctx.data_mut().limits;
            if limits.ticks_left == 0 {
                limits.deadline_hit = true;
                return Err(wasmtime::Trap::Interrupt.into());
            }
            limits.ticks_left -= 1;
            // Yield to the async runtime at every tick so a long guest call
            // never holds a worker thread.
            Ok(UpdateDeadline::Yield(1))
        });
        store
    }

    fn arm(&self, store: &mut Store<HostState>) {
        let ticks = self.deadline_ticks();
        let limits = &mut store.data_mut().limits;
        limits.ticks_left = ticks;
        limits.deadline_hit = false;
        limits.memory_cap_hit = false;
        store.set_epoch_deadline(1);
    }

    fn classify(&self, store: &Store<HostState>, e: wasmtime::Error) -> FaultCause {
        let limits = &store.data().limits;
        if limits.deadline_hit {
            FaultCause::Deadline(self.options.call_deadline_ms)
        } else if limits.memory_cap_hit {
            FaultCause::MemoryCap(self.options.memory_cap)
        } else {
            let root = e.root_cause().to_string();
            let first = format!("{e}");
            let first = first.lines().next().unwrap_or_default().to_string();
            if first == root || first.is_empty() {
                FaultCause::Trap(root)
            } else {
                FaultCause::Trap(format!("{root} ({first})"))
            }
        }
    }

    async fn instantiate(&self) -> Result<(Store<HostState>, W::Bindings), Startup> {
        let mut store = self.new_store();
        self.arm(&mut store);
        let bindings = match W::instantiate(&self.pre, &mut store).await {
            Ok(b) => b,
            Err(e) => return Err(Startup::Fault(self.classify(&store, e))),
        };
        self.arm(&mut store);
        match W::configure(&bindings, &mut store, &self.settings).await {
            Ok(Ok(())) => Ok((store, bindings)),
            Ok(Err(e)) => Err(Startup::Refused(convert::error(e, &self.health.output()))),
            Err(e) => Err(Startup::Fault(self.classify(&store, e))),
        }
    }

    fn backoff(&self, faults: u32) -> Duration {
        // The runtime checked the options when it was built.
        let backoff = self.options.restart_backoff().unwrap_or_default();
        backoff.delay(faults.saturating_sub(1), &mut rand::rng())
    }

    fn fault(&self, live: &mut Live<W>, op: &str, cause: FaultCause) -> Duration {
        let faults = self.health.fault(cause.clone());
        let wait = self.backoff(faults);
        live.instance = None;
        live.retry_at = Some(Instant::now() + wait);
        live.cause = Some(cause.clone());
        tracing::error!(
            plugin = &*self.name,
            op,
            cause = %cause,
            retry_in_ms = wait.as_millis() as u64,
            "plugin instance disabled; the host keeps running"
        );
        wait
    }

    /// Stop a running preemptible call now (it returns
    /// [`PluginError::Preempted`]); the instance is made afresh.
    pub(crate) fn preempt(&self) {
        self.preempt.notify_waiters();
    }

    /// Run one call against the instance, re-instantiating it first if it
    /// was disabled and its backoff has elapsed, with the bounds of its
    /// [`CallKind`] (a failover-path call's wall-clock limit counts waiting
    /// for the instance, re-instantiating it and time in host capabilities).
    /// A call stopped at its limit or preempted leaves its instance in an
    /// unknown state: it is dropped and made afresh at the next call, without
    /// a fault or a backoff.
    pub(crate) async fn call<R>(
        &self,
        op: &'static str,
        kind: CallKind,
        f: impl for<'a> FnOnce(
            &'a W::Bindings,
            &'a mut Store<HostState>,
        ) -> BoxFuture<'a, wasmtime::Result<R>>,
    ) -> Result<R, PluginError> {
        let limit = (kind == CallKind::FailoverPath)
            .then(|| Duration::from_millis(self.options.failover_call_limit_ms));
        let deadline = limit.map(|l| tokio::time::Instant::now() + l);
        let timed_out = || PluginError::TimedOut {
            plugin: self.name.to_string(),
            op,
            limit_ms: limit.map(|l| l.as_millis() as u64).unwrap_or(0),
        };
        let mut live = match deadline {
            Some(at) => tokio::time::timeout_at(at, self.live.lock())
                .await
                .map_err(|_| timed_out())?,
            None => self.live.lock().await,
        };
        if live.instance.is_none() {
            let cause = live
                .cause
                .clone()
                .unwrap_or(FaultCause::Startup("not started".into()));
            if let Some(at) = live.retry_at {
                let now = Instant::now();
                if now < at {
                    return Err(PluginError::Disabled {
                        plugin: self.name.to_string(),
                        cause,
                        retry_in_ms: (at - now).as_millis() as u64,
                    });
                }
            }
            match self.instantiate().await {
                Ok(instance) => {
                    live.instance = Some(instance);
                    live.retry_at = None;
                    self.health.restarted();
                    tracing::info!(plugin = &*self.name, "plugin instance re-instantiated");
                }
                Err(startup) => {
                    let cause = match startup {
                        Startup::Fault(c) => c,
                        Startup::Refused(e) => FaultCause::Startup(format!("configure: {e}")),
                    };
                    let wait = self.fault(&mut live, "re-instantiate", cause.clone());
                    return Err(PluginError::Disabled {
                        plugin: self.name.to_string(),
                        cause,
                        retry_in_ms: wait.as_millis() as u64,
                    });
                }
            }
        }
        let Some((store, bindings)) = live.instance.as_mut() else {
            return Err(PluginError::Disabled {
                plugin: self.name.to_string(),
                cause: FaultCause::Startup("no instance".into()),
                retry_in_ms: 0,
            });
        };
        self.arm(store);
        let stop_at = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let preempted = async {
            match kind {
                CallKind::Preemptible => self.preempt.notified().await,
                _ => std::future::pending().await,
            }
        };
        let stopped = tokio::select! {
            outcome = f(bindings, store) => Ok(outcome),
            () = stop_at => Err(timed_out()),
            () = preempted => Err(PluginError::Preempted {
                plugin: self.name.to_string(),
                op,
            }),
        };
        let outcome = match stopped {
            Ok(outcome) => outcome,
            Err(why) => {
                // The call was dropped mid-way: its instance is in an unknown
                // state, and host work it began is told it is abandoned.
                if let Some((store, _)) = &live.instance {
                    store.data().abandon();
                }
                live.instance = None;
                live.retry_at = None;
                tracing::warn!(
                    plugin = &*self.name,
                    op,
                    "{why}; the instance will be made afresh"
                );
                return Err(why);
            }
        };
        match outcome {
            Ok(r) => {
                self.health.call_ok();
                Ok(r)
            }
            Err(e) => {
                let cause = self.classify(store, e);
                self.fault(&mut live, op, cause.clone());
                Err(PluginError::Faulted {
                    plugin: self.name.to_string(),
                    cause,
                })
            }
        }
    }

    /// What a call returned, converted with the instance's output bounds.
    fn returned<T, U>(
        &self,
        r: Result<T, wit::Error>,
        f: impl FnOnce(T, &InstanceOutput) -> U,
    ) -> Result<U, PluginError> {
        let out = self.health.output();
        match r {
            Ok(v) => Ok(f(v, &out)),
            Err(e) => Err(PluginError::Returned {
                plugin: self.name.to_string(),
                error: convert::error(e, &out),
            }),
        }
    }

    /// The instance's output bounds.
    fn output(&self) -> std::sync::Arc<InstanceOutput> {
        self.health.output()
    }
}

/// What bounds a call beyond its guest-time deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallKind {
    /// Nothing more.
    Plain,
    /// A promotion may stop it ([`Slot::preempt`]): tick, on-receive.
    Preemptible,
    /// On the promotion and demotion path: the runtime's wall-clock limit
    /// for such calls.
    FailoverPath,
}

enum Startup {
    /// The plugin refused its settings.
    Refused(CallError),
    /// Instantiation or configure trapped.
    Fault(FaultCause),
}

/// A replication strategy running as a wasm component.
pub struct WasmStrategy {
    slot: Slot<StrategyWorld>,
}

impl WasmStrategy {
    pub(crate) fn new(slot: Slot<StrategyWorld>) -> Self {
        Self { slot }
    }
}

#[async_trait]
impl Strategy for WasmStrategy {
    fn name(&self) -> &str {
        self.slot.name()
    }

    fn health(&self) -> Health {
        self.slot.health()
    }

    async fn describe(&self) -> Result<Descriptor, PluginError> {
        let d = self
            .slot
            .call("describe", CallKind::Plain, |b, s| {
                Box::pin(b.standby_plugin_lifecycle().call_describe(s))
            })
            .await?;
        Ok(convert::descriptor(d, &self.slot.output()))
    }

    async fn tick(&self, ctx: &NodeContext) -> Result<TickReport, PluginError> {
        let c = convert::ctx(ctx);
        let r = self
            .slot
            .call("tick", CallKind::Preemptible, move |b, s| {
                Box::pin(async move { b.standby_plugin_strategy().call_tick(s, &c).await })
            })
            .await?;
        self.slot.returned(r, convert::tick)
    }

    async fn on_receive(&self, ctx: &NodeContext, item: Received) -> Result<(), PluginError> {
        let c = convert::ctx(ctx);
        let item = convert::received(&item);
        let r = self
            .slot
            .call("on-receive", CallKind::Preemptible, move |b, s| {
                Box::pin(async move {
                    b.standby_plugin_strategy()
                        .call_on_receive(s, &c, &item)
                        .await
                })
            })
            .await?;
        self.slot.returned(r, |(), _| ())
    }

    async fn on_promote(&self, ctx: &NodeContext) -> Result<PromoteReport, PluginError> {
        let c = convert::ctx(ctx);
        let r = self
            .slot
            .call("on-promote", CallKind::FailoverPath, move |b, s| {
                Box::pin(async move { b.standby_plugin_strategy().call_on_promote(s, &c).await })
            })
            .await?;
        self.slot.returned(r, convert::promote)
    }

    async fn on_demote(&self, ctx: &NodeContext) -> Result<(), PluginError> {
        let c = convert::ctx(ctx);
        let r = self
            .slot
            .call("on-demote", CallKind::FailoverPath, move |b, s| {
                Box::pin(async move { b.standby_plugin_strategy().call_on_demote(s, &c).await })
            })
            .await?;
        self.slot.returned(r, |(), _| ())
    }

    fn preempt(&self) {
        self.slot.preempt();
    }

    async fn handover(
        &self,
        ctx: &NodeContext,
        first: bool,
    ) -> Result<HandoverProgress, PluginError> {
        let c = convert::ctx(ctx);
        let r = self
            .slot
            .call("handover", CallKind::Preemptible, move |b, s| {
                Box::pin(async move {
                    b.standby_plugin_strategy()
                        .call_handover(s, &c, first)
                        .await
                })
            })
            .await?;
        self.slot.returned(r, convert::handover)
    }

    async fn status(&self, ctx: &NodeContext) -> Result<StrategyStatus, PluginError> {
        let c = convert::ctx(ctx);
        let r = self
            .slot
            .call("status", CallKind::Plain, move |b, s| {
                Box::pin(async move { b.standby_plugin_strategy().call_status(s, &c).await })
            })
            .await?;
        Ok(convert::status(r, &self.slot.output()))
    }
}

/// A failover action running as a wasm component.
pub struct WasmAction {
    slot: Slot<ActionWorld>,
}

impl WasmAction {
    pub(crate) fn new(slot: Slot<ActionWorld>) -> Self {
        Self { slot }
    }
}

#[async_trait]
impl FailoverAction for WasmAction {
    fn name(&self) -> &str {
        self.slot.name()
    }

    fn health(&self) -> Health {
        self.slot.health()
    }

    async fn describe(&self) -> Result<Descriptor, PluginError> {
        let d = self
            .slot
            .call("describe", CallKind::Plain, |b, s| {
                Box::pin(b.standby_plugin_lifecycle().call_describe(s))
            })
            .await?;
        Ok(convert::descriptor(d, &self.slot.output()))
    }

    async fn activate(&self, ctx: &NodeContext) -> Result<ActionReport, PluginError> {
        let c = convert::ctx(ctx);
        let r = self
            .slot
            .call("activate", CallKind::FailoverPath, move |b, s| {
                Box::pin(async move { b.standby_plugin_action().call_activate(s, &c).await })
            })
            .await?;
        self.slot.returned(r, convert::action)
    }

    async fn deactivate(&self, ctx: &NodeContext) -> Result<ActionReport, PluginError> {
        let c = convert::ctx(ctx);
        let r = self
            .slot
            .call("deactivate", CallKind::FailoverPath, move |b, s| {
                Box::pin(async move { b.standby_plugin_action().call_deactivate(s, &c).await })
            })
            .await?;
        self.slot.returned(r, convert::action)
    }

    async fn verify(&self, ctx: &NodeContext) -> Result<ActionReport, PluginError> {
        let c = convert::ctx(ctx);
        let r = self
            .slot
            .call("verify", CallKind::FailoverPath, move |b, s| {
                Box::pin(async move { b.standby_plugin_action().call_verify(s, &c).await })
            })
            .await?;
        self.slot.returned(r, convert::action)
    }
}
