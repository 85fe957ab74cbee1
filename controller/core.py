"""The controller: owns the pipeline table, measures bandwidth, decides, and switches.

It is the only writer of routing: every change goes through the gateway's admin API,
one switch at a time (``_switch_lock``). If the controller dies the gateway keeps
serving its current pipeline; a restarted controller rebuilds its table from the
gateway's routing and the backend's records (``adopt``) instead of starting anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Coroutine

import httpx

from controller.backends.base import ServiceHandle, ServiceKind
from controller.gateway_client import GatewayClient, SwitchOutcome
from controller.health import PartitionWatch
from controller.history import Outcome, SwitchJournal, SwitchRecord
from controller.pin import Pin
from controller.pipelines import (
    PROBE_ROLE,
    ManagedPipeline,
    PipelineLauncher,
    PipelineState,
    orphan_services,
    pipelines_from_services,
)
from controller.settings import ControllerSettings, StrategyName
from controller.standby import SeenBandwidths, likely_cuts
from controller.strategies import STRATEGIES
from models.planner import Option, Planner
from models.switch_policy import Decision, SwitchPolicy, SwitchRule
from neukonfig.errors import EdgeMemoryError, NeukonfigError
from neukonfig.metrics import Metrics
from neukonfig.protocol import PARTITION_INFO_PATH, PROBE_PATH, TRANSFERS_PATH
from neukonfig.service import internal_headers
from neukonfig.tls import tls_http_client
from neukonfig.units import parse_bandwidth, parse_duration
from serving.bandwidth import BandwidthEstimator, Sample, Source, transfer_sample

log = logging.getLogger("neukonfig.controller")
HISTORY_SIZE = 1000
HISTORY_FILE = "switch-history.jsonl"  # in the state directory; not a backend record (*.json)
STANDBY_REFRESH = "standby-refresh"
AUTO_SWITCH = "automatic-switch"
PROBE_TARGET_S = 0.05
MAX_PROBE_BYTES = 1 << 20
PROBE_SLACK = 20
MIN_PROBE_TIMEOUT_S, MAX_PROBE_TIMEOUT_S = 1.0, 10.0
# A kernel reading older than this (as the edge reports its age) is not "now".
KERNEL_FRESH_S = 0.5
# A transfer in flight this many times longer than the estimate allows lowers it.
OVERDUE_FACTOR = 2.0
# Undelivered bytes on the link from which it counts as busy (no probing then).
BUSY_LINK_BYTES = 16 * 1024
# Evidence older than this is stale: probe even behind a busy link.
STALE_S = 3.0
# How often to probe when nothing of ours crosses the link (all-edge): the probes are
# then the only way to see it recover; and when the last probe disputed the estimate.
SOON_PROBE_S = 0.25
# Without a configured budget, pipelines may fill this share of the edge's memory limit
# (the rest is the gateway's, the system's, and a load's transient).
DEFAULT_BUDGET_SHARE = 0.8


class Controller:
    def __init__(
        self,
        settings: ControllerSettings,
        *,
        launcher: PipelineLauncher,
        planner: Planner,
        gateway: GatewayClient,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.launcher = launcher
        self.planner = planner
        self.gateway = gateway
        self.metrics = metrics or Metrics(service="controller")
        self.metrics.start_switch_series([strategy.value for strategy in StrategyName])
        self.metrics.bandwidth.set(float("nan"))  # exported from the start: not measured yet
        self.rtt_s = parse_duration(settings.rtt)
        self.estimator = BandwidthEstimator(rtt_s=self.rtt_s)
        rule = SwitchRule(
            min_gain_s=settings.min_gain_s,
            min_gain_fraction=settings.min_gain_fraction,
            dwell_s=settings.dwell_s,
            fast_gain_fraction=settings.fast_gain_fraction,
            fast_dwell_s=settings.fast_dwell_s,
        )
        self.policy = SwitchPolicy(planner, rule=rule)
        self.pipelines: dict[str, ManagedPipeline] = {}
        self.active: ManagedPipeline | None = None
        # This run's switches; the journal keeps the finished ones across restarts.
        self.history: deque[SwitchRecord] = deque(maxlen=HISTORY_SIZE)
        self.journal = SwitchJournal(settings.state_dir / HISTORY_FILE, keep=HISTORY_SIZE)
        self._earlier_history = self.journal.load()
        self.last_decision: str | None = None
        self.pin: Pin | None = None
        self.link_busy = False  # the active edge has data in flight on the link
        self.seen_bandwidths = SeenBandwidths()  # where the link has been: standby choice
        self._switch_lock = asyncio.Lock()
        self._transfer_seq: dict[str, int] = {}
        self._last_probe_s = float("-inf")
        self._probing: asyncio.Task[None] | None = None
        self._probe_bytes_in_flight = 0  # they share the link with the requests' transfers
        self._next_probe_bytes = 0
        self.probe: ServiceHandle | None = None
        # Retirements and standby refreshes that run after a switch has finished; awaited
        # on shutdown.
        self._background: set[asyncio.Task[object]] = set()
        self.probe_url: str | None = None
        # The memory limit the edge partitions report (None: none), once one answered.
        self.edge_memory_limit: int | None = None
        self._edge_memory_limit_known = False
        self._http = tls_http_client(
            settings.tls_dir, timeout=10.0, headers=internal_headers(settings.internal_token)
        )
        self.partition_watch = PartitionWatch(
            self._http,
            period_s=settings.cloud_check_s,
            failures_to_replace=settings.cloud_failures_to_replace,
            retry_s=settings.cloud_replace_retry_s,
        )

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Adopt what is already running, or bring up the planned initial pipeline."""
        await self.adopt()
        if self.probe is None:
            try:
                self.probe, self.probe_url = await self.launcher.start_probe()
            except NeukonfigError as error:  # serving matters more than measuring
                log.warning("no probe target on the cloud side (%s); probing pipelines only", error)
        if self.active is None:
            initial = self.planner.best(
                parse_bandwidth(self.settings.initial_bandwidth), self.rtt_s
            )
            log.info("starting the initial pipeline at cut %s", initial.label)
            pipeline = self.standby_for(initial.option) or await self.launch(initial.option)
            await self.activate(pipeline, "initial")
        await self._learn_edge_memory_limit()
        if self.settings.strategy is StrategyName.SWITCH_STANDBY:
            await self.refresh_standby()

    async def adopt(self) -> None:
        routing = await self.gateway.routing()
        handles = await self.launcher.backend.discover()
        found = pipelines_from_services(handles)
        registered = {p.id for p in routing.pipelines}
        probes = [h for h in handles if h.spec.labels.get("neukonfig.role") == PROBE_ROLE]
        if probes:
            self.probe = probes[0]
            self.probe_url = await asyncio.to_thread(self.launcher.link.route, self.probe.url)
        strays = orphan_services(handles, found) + probes[1:]
        strays += [
            service
            for pipeline_id, pipeline in found.items()
            if pipeline_id not in registered
            for service in (pipeline.edge, pipeline.cloud)
            if service is not None
        ]
        for service in strays:  # a start cut short by a crash: roll it back
            log.warning("stopping stray service %s", service.spec.name)
            await self.launcher.backend.stop(service)
        self.pipelines = {pid: p for pid, p in found.items() if pid in registered}
        self.active = self.pipelines.get(routing.active) if routing.active else None
        if self.active is not None:
            self.active.state = PipelineState.ACTIVE
            self.metrics.current_cut.labels(self.settings.model_name).set(self.active.cut)
        if self.pipelines:
            log.info("adopted %d pipelines; active %s", len(self.pipelines), routing.active)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Controller]:
        """Start (adopt, or bring up the first pipeline), run the control loop, and shut
        down on the way out, whatever happened inside."""
        loop: asyncio.Task[None] | None = None
        try:
            await self.start()
            loop = asyncio.create_task(self.run(), name="control-loop")
            yield self
        finally:
            if loop is not None:
                loop.cancel()
                await asyncio.gather(loop, return_exceptions=True)
            await self.shutdown()

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except NeukonfigError as error:
                log.warning("control tick failed: %s", error)
            except Exception:  # the loop must outlive any one bad tick
                log.exception("control tick failed unexpectedly")
            await asyncio.sleep(self.settings.tick_s)

    async def shutdown(self) -> None:
        if self._probing is not None:
            self._probing.cancel()
            await asyncio.gather(self._probing, return_exceptions=True)
        for task in self._background:
            # A standby or an automatic switch half-started is stopped (a switch cut short
            # leaves the old pipeline active, as a crash would).
            if task.get_name() in (STANDBY_REFRESH, AUTO_SWITCH):
                task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.settings.stop_services_on_exit:
            for pipeline in list(self.pipelines.values()):
                with contextlib.suppress(NeukonfigError):
                    await self.launcher.stop(pipeline)
            self.pipelines.clear()
            if self.probe is not None:
                await self.launcher.stop_probe(self.probe)
                self.probe = None
        await self._http.aclose()
        await self.gateway.aclose()

    # -- the control loop ------------------------------------------------------------

    async def tick(self) -> None:
        now = time.monotonic()
        await self._replace_failed_pipeline()
        await self._collect_transfers(now)
        probe_idle = self._probing is None or self._probing.done()
        idle_link = self.active is not None and self.active.cloud is None
        soon = idle_link or self.estimator.probe_disputed()
        every = SOON_PROBE_S if soon else self.estimator.window_s
        due = now - self._last_probe_s >= every
        # Not while the edge has data in flight: a probe behind a queue measures the queue,
        # not the link (and the traffic itself is the better evidence then). But never let
        # the estimate freeze: evidence older than STALE_S is probed for regardless.
        age = self.estimator.update(now).age_s
        stale = age is None or age > STALE_S
        quiet = not self.link_busy or stale
        if probe_idle and due and quiet and self.estimator.needs_probe(now):
            # In the background: on a collapsed link a probe takes seconds to time out,
            # and the loop must go on deciding (and watching the cloud) meanwhile.
            self._last_probe_s = now
            self._probing = asyncio.create_task(self._probe(), name="bandwidth-probe")
        estimate = self.estimator.update(time.monotonic())
        if estimate.bits_per_second is None or self.active is None:
            return
        self.metrics.bandwidth.set(estimate.bits_per_second)
        self.seen_bandwidths.add(now, estimate.bits_per_second)
        if not self.settings.auto or self._pinned():
            return
        if not estimate.confident:
            self.last_decision = "stay: not enough evidence of the link yet"
            return
        if not self.planner.plans(self.active.option):
            self._leave_unplanned(estimate.bits_per_second)
            return
        # Asked even while a switch or a standby refresh holds the lock (seconds on a slow
        # edge), so that the policy sees every turn of a flapping link; acted on only after.
        decision = self.policy.decide(
            current=self.active.option,
            bandwidth_bps=estimate.bits_per_second,
            now_s=now,
            rtt_s=self.rtt_s,
            switch_cost_s=self._switch_cost(
                self.planner.best(estimate.bits_per_second, self.rtt_s).option
            ),
        )
        self.last_decision = f"{decision.decision.value}: {decision.detail}"
        if self.switching:
            self.last_decision = f"wait for the switch under way; then {self.last_decision}"
        elif decision.decision is Decision.SWITCH:
            # In the background: an on-demand start takes seconds on a slow edge, and the
            # loop must go on measuring the link (and watching the cloud) meanwhile.
            # The estimate's source in the record: which evidence moved the service.
            source = estimate.source.value if estimate.source else "unknown"
            reason = f"{decision.detail} ({source} estimate)"
            self._in_background(self.switch_to(decision.best, reason=reason), name=AUTO_SWITCH)

    def _leave_unplanned(self, bandwidth_bps: float) -> None:
        """The active pipeline serves an option this planner does not have (adopted from a
        run with a wider codec budget): move to the best planned one, without the policy's
        dwell, since it cannot weigh a row it does not know."""
        assert self.active is not None
        label = self.active.option.label
        if self.switching:
            self.last_decision = f"wait for the switch under way; cut {label} is not planned"
            return
        best = self.planner.best(bandwidth_bps, self.rtt_s).option
        reason = f"cut {label} is not in the plan (its codec is outside the codec budget)"
        self.last_decision = f"switch: {reason}"
        self._in_background(self.switch_to(best, reason=reason), name=AUTO_SWITCH)

    @property
    def switching(self) -> bool:
        """A switch holds the lock, or an automatic one is about to take it."""
        starting = any(t.get_name() == AUTO_SWITCH and not t.done() for t in self._background)
        return starting or self._switch_lock.locked()

    def _pinned(self) -> bool:
        """True while an operator's pin holds (an expired one is dropped here)."""
        if self.pin is not None and self.pin.expired():
            log.info(
                "the pin on cut %s expired: automatic switching resumes", self.pin.option.label
            )
            self.pin = None
            self.policy.reset()
        if self.pin is None:
            return False
        self.last_decision = f"pinned: cut {self.pin.option.label} was chosen by an operator"
        return True

    async def switch_manually(
        self, target: int | Option, *, strategy: StrategyName | None, hold_s: float | None
    ) -> SwitchRecord:
        """An operator's switch: pinned until unpinned, or for ``hold_s`` seconds."""
        record = await self.switch_to(target, strategy=strategy, reason="manual")
        if record.outcome is Outcome.SWITCHED:
            self.pin = Pin.hold(Option.of(target), hold_s)
        return record

    def unpin(self) -> Pin | None:
        pin, self.pin = self.pin, None
        self.policy.reset()
        return pin

    @property
    def planning_bandwidth(self) -> float:
        """The estimate, or before there is one the configured initial bandwidth."""
        return self.estimator.current or parse_bandwidth(self.settings.initial_bandwidth)

    async def _replace_failed_pipeline(self) -> None:
        """A dead or hung partition: start a fresh pipeline for the best cut (on demand, as
        a standby may share the failed host) and move to it. Meanwhile the edge answers
        locally if its cloud failed, and the gateway retries on a standby if the edge did."""
        if self.switching:
            return
        reason = await self.partition_watch.replacement_reason(self.active)
        if reason is None:
            return
        log.warning("%s: replacing it", reason)
        best = self.planner.best(self.planning_bandwidth, self.rtt_s).option
        record = await self.switch_to(best, strategy=StrategyName.SWITCH_ON_DEMAND, reason=reason)
        if record.outcome is Outcome.SWITCHED:
            self.partition_watch.replaced()

    def _switch_cost(self, option: Option) -> float:
        if self.settings.strategy is StrategyName.SWITCH_STANDBY and self.standby_for(option):
            return 0.0
        return self.planner.load_s(option)

    async def _collect_transfers(self, now: float) -> None:
        """What the active edge knows of the link: completed transfers, the kernel's
        delivery rate while busy, and transfers in flight that are overdue."""
        if self.active is None or self.active.cloud is None:
            self.link_busy = False  # nothing of ours crosses the link
            return
        pipeline = self.active
        after = self._transfer_seq.get(pipeline.id, 0)
        try:
            response = await self._http.get(
                f"{pipeline.edge.url}{TRANSFERS_PATH}", params={"after": after}
            )
            snapshot = response.json()
            transfers = snapshot["transfers"]
        except (httpx.HTTPError, ValueError, KeyError):
            return
        wall = time.time()
        for record in transfers:
            self._transfer_seq[pipeline.id] = max(after, record["seq"])
            if not record.get("warm", True):
                continue  # a new connection's handshake and slow start are not the link
            at = now - max(wall - record["unix_time"], 0.0)
            sample = transfer_sample(
                at,
                record["bytes"],
                record["seconds"],
                tail_bytes=record.get("tail_bytes", 0),
                tail_seconds=record.get("tail_seconds", 0.0),
            )
            self.estimator.add(sample)
        kernel = snapshot.get("kernel")
        undelivered = (
            kernel["undelivered_bytes"]
            if kernel
            else sum(f["bytes"] for f in snapshot.get("in_flight", []))
        )
        self.link_busy = undelivered >= BUSY_LINK_BYTES
        if kernel and kernel["delivery_bps"] and kernel["age_s"] < KERNEL_FRESH_S:
            self.estimator.add_kernel(now - kernel["age_s"], kernel["delivery_bps"])
        elif snapshot.get("in_flight"):
            self._bound_by_overdue(pipeline.option, snapshot["in_flight"], now)

    def _bound_by_overdue(
        self, option: Option, in_flight: list[dict[str, float]], now: float
    ) -> None:
        """Transfers in flight far longer than the estimate allows say the link is at most
        their bytes over their link time so far: lower the estimate now, not when they
        complete (on a 10x drop that is seconds later). Transfers in flight together share
        the link, so it is all their bytes over the oldest one's time (one transfer's bytes
        over its time undershoots by the sharing: suspected behind a saturated 5 mbit link
        read as 3.01 mbit for a second in CI)."""
        estimate = self.estimator.current
        if estimate is None or not in_flight or not self.planner.plans(option):
            return
        cloud_s = float(self.planner.cloud_s[self.planner.row(option)])
        overhead = self.estimator.overhead_s(Source.PASSIVE)
        link_s = max(f["age_s"] for f in in_flight) - cloud_s - overhead
        # A probe in flight shares the link too: without its bytes, requests queued behind
        # a probe sized for the old, fast link read a 2 mbit link as 0.1 mbit.
        together = sum(f["bytes"] for f in in_flight) + self._probe_bytes_in_flight
        expected = together * 8 / estimate
        if link_s > OVERDUE_FACTOR * expected and link_s > self.estimator.min_net_s:
            self.estimator.cap(now, together * 8 / link_s)

    async def _probe(self) -> None:
        """Send probe bytes across the link to some cloud partition, when traffic is thin.
        The cloud times the second half of the bytes as they arrive: the link's time for
        them, without the round trip, the HTTP handling or the link's burst allowance."""
        target = self.probe_url or next(
            (
                p.cloud_url_for_edge
                for p in [self.active, *self.pipelines.values()]
                if p and p.cloud_url_for_edge
            ),
            None,
        )
        if target is None:
            return
        size = self._probe_size()
        timeout = self._probe_timeout(size)
        began = time.monotonic()
        self._probe_bytes_in_flight = size
        try:
            response = await self._http.post(
                target + PROBE_PATH, content=b"\0" * size, timeout=timeout
            )
        except httpx.TimeoutException:
            # A collapsed link completes nothing, so no sample would ever say so.
            self.estimator.cap(time.monotonic(), size * 8 / timeout)
            return
        except httpx.HTTPError:
            return
        finally:
            self._probe_bytes_in_flight = 0
        exchange_s = time.monotonic() - began
        if response.status_code != 200:
            return
        try:
            answer = response.json()
            tail_bytes, tail_seconds = int(answer["tail_bytes"]), float(answer["tail_seconds"])
        except (ValueError, KeyError, TypeError):
            return  # not a probe answer this controller understands: no evidence
        if tail_seconds < self.estimator.min_net_s:
            self._too_quick_to_time(size, exchange_s)
            return
        sample = Sample(time.monotonic(), tail_bytes, tail_seconds, Source.ACTIVE, net=True)
        self.estimator.add(sample)

    def _too_quick_to_time(self, size: int, exchange_s: float) -> None:
        """A probe whose tail the cloud could not time: the link is far faster than the
        estimate, or the probe's tail fit in one chunk or burst (the shaping proxy
        forwards 16 KiB at a time), or the receiver was late (descheduled under load) and
        read it all at once. The next probe is four times larger. The receiver's "instant"
        is no evidence (it read a 14 mbit link as 65 mbit); the sender's clock is: half
        the probe at least (a burst allowance is less) crossed within the whole exchange,
        which no lateness makes shorter. That raises an estimate it exceeds, and never
        makes one up (as an estimate it read a 14 mbit link as 4.9 mbit and moved the
        service)."""
        self._next_probe_bytes = min(4 * size, MAX_PROBE_BYTES)
        floor = size // 2 * 8 / max(exchange_s, self.estimator.min_net_s)
        estimate = self.estimator.current
        if estimate is not None and floor > estimate:
            self.estimator.raise_floor(time.monotonic(), floor)

    def _probe_timeout(self, size: int) -> float:
        """PROBE_SLACK times the probe's expected time at the estimate, within bounds: a
        probe slower than that means the link is far slower than estimated."""
        estimate = self.estimator.current
        expected = size * 8 / estimate if estimate else MAX_PROBE_TIMEOUT_S
        return min(max(expected * PROBE_SLACK, MIN_PROBE_TIMEOUT_S), MAX_PROBE_TIMEOUT_S)

    def _probe_size(self) -> int:
        """The next probe's size: about PROBE_TARGET_S of traffic at the current estimate,
        long enough to outlast the link's burst allowance (a probe inside the burst
        measures line rate), short enough not to crowd out requests; larger once after a
        probe too quick to time."""
        estimate = self.estimator.current
        wanted = estimate * PROBE_TARGET_S / 8 if estimate else 0
        wanted = max(wanted, self.settings.probe_bytes, self._next_probe_bytes)
        self._next_probe_bytes = 0  # grown once, for the probe after one too quick to time
        return int(min(wanted, MAX_PROBE_BYTES))

    # -- switching -------------------------------------------------------------------

    def full_history(self) -> list[SwitchRecord]:
        """Switches of earlier runs on this state directory (finished ones), then this
        run's: what ``/v1/history`` shows, so a restart does not wipe the record."""
        return [*self._earlier_history, *self.history][-HISTORY_SIZE:]

    async def switch_to(
        self,
        target: int | Option,
        *,
        strategy: StrategyName | None = None,
        reason: str = "manual",
    ) -> SwitchRecord:
        """Move to ``target`` (a bare cut is its plain option) by ``strategy``."""
        strategy = strategy or self.settings.strategy
        target = Option.of(target)
        async with self._switch_lock:
            record = SwitchRecord(
                strategy=strategy.value,
                from_cut=self.active.cut if self.active else None,
                to_cut=target.cut,
                reason=reason,
                trigger_unix=time.time(),
                from_codec=self.active.codec if self.active else None,
                to_codec=target.codec,
            )
            self.history.append(record)  # visible (in progress) while it runs
            source = self.active.option.label if self.active else None
            log.info("switching %s -> %s: %s", source, target.label, reason)
            try:
                await STRATEGIES[strategy](self, target, record)
                record.outcome = Outcome.SWITCHED
            except NeukonfigError as error:
                record.outcome, record.error = Outcome.ABANDONED, error.message
                log.error("switch to cut %s abandoned: %s", target.label, error.message)
            except asyncio.CancelledError:
                record.outcome, record.error = Outcome.ABANDONED, "the controller is stopping"
                raise
            else:
                # Counted once the record is final, so /metrics and /v1/history agree.
                self.metrics.switches.labels(strategy.value).inc()
                self.metrics.switch_downtime.labels(strategy.value).observe(
                    record.unavailable_s or 0.0
                )
                log.info(record.describe())
                if strategy is StrategyName.SWITCH_STANDBY:
                    # The switch is done once the pointer moved; warming the next standby
                    # is follow-up work (it waits for this lock, so no switch overlaps it).
                    self._in_background(self._refresh_standby_when_free(), name=STANDBY_REFRESH)
            finally:
                if record.finished:
                    self.journal.append(record)
            self.policy.reset()
            return record

    async def _refresh_standby_when_free(self) -> None:
        async with self._switch_lock:
            try:
                await self.refresh_standby()
            except NeukonfigError as error:
                log.error("refreshing standby pipelines failed: %s", error.message)

    def _in_background(self, coroutine: Coroutine[object, object, object], *, name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def pause(self) -> None:
        await self.gateway.switch(None, strategy=StrategyName.PAUSE_RESUME.value)

    def retire_later(self, pipeline: ManagedPipeline) -> None:
        """Retire (drain, then stop) without holding up the caller; awaited on shutdown.
        It stays in the table (STOPPING) until stopped: its memory still counts."""
        pipeline.state = PipelineState.STOPPING
        self._in_background(self._retire_quietly(pipeline), name=f"retire-{pipeline.id}")

    async def _retire_quietly(self, pipeline: ManagedPipeline) -> None:
        try:
            await self.retire(pipeline)
        except NeukonfigError as error:
            log.error("retiring %s failed: %s", pipeline.id, error.message)

    async def launch(self, option: Option, *, replaces_active: bool = False) -> ManagedPipeline:
        """Start a pipeline for ``option`` and register it with the gateway (not yet
        active); refused before anything starts if the edge has no room for it."""
        await self._check_edge_room(option, replaces_active=replaces_active)
        pipeline = await self.launcher.start(option)
        try:
            await self.gateway.register(
                pipeline_id=pipeline.id,
                cut=option.cut,
                codec=option.codec,
                edge_url=pipeline.edge.url,
                cloud_url=pipeline.cloud.url if pipeline.cloud else None,
            )
        except BaseException:
            await self.launcher.stop(pipeline)
            raise
        pipeline.state = PipelineState.STANDBY
        self.pipelines[pipeline.id] = pipeline
        return pipeline

    async def activate(self, pipeline: ManagedPipeline, strategy: str) -> SwitchOutcome:
        outcome = await self.gateway.switch(pipeline.id, strategy=strategy)
        if self.active is not None and self.active is not pipeline:
            self.active.state = PipelineState.STANDBY
        pipeline.state = PipelineState.ACTIVE
        self.active = pipeline
        self.metrics.current_cut.labels(self.settings.model_name).set(pipeline.cut)
        return outcome

    async def retire(self, pipeline: ManagedPipeline) -> None:
        """Drain at the gateway (bounded), then stop its services."""
        if pipeline is self.active:
            self.active = None
        with contextlib.suppress(NeukonfigError):  # already gone from the gateway is fine
            await self.gateway.retire(pipeline.id, drain_timeout_s=self.settings.drain_timeout_s)
        await self.launcher.stop(pipeline)
        self.pipelines.pop(pipeline.id, None)

    def standby_for(self, option: Option) -> ManagedPipeline | None:
        return next(
            (
                p
                for p in self.pipelines.values()
                if p.option == option and p.state is PipelineState.STANDBY
            ),
            None,
        )

    async def refresh_standby(self) -> None:
        """Keep warm the cuts the bandwidth would most likely move to, within the budget."""
        if self.active is None:
            return
        bandwidth = self.planning_bandwidth
        wanted = likely_cuts(
            self.planner,
            bandwidth_bps=bandwidth,
            rtt_s=self.rtt_s,
            current=self.active.option,
            count=self.settings.max_standby,
            seen=self.seen_bandwidths.values(),
        )
        for pipeline in [p for p in self.pipelines.values() if p.state is PipelineState.STANDBY]:
            if pipeline.option not in wanted:
                await self.retire(pipeline)
        for option in wanted:
            if self.standby_for(option) is not None:
                continue
            try:
                await self.launch(option)
            except EdgeMemoryError as error:
                log.info("no standby for cut %s: %s", option.label, error.message)
                return
            except NeukonfigError as error:
                log.warning("standby for cut %s not started: %s", option.label, error.message)

    @property
    def edge_memory_budget(self) -> int | None:
        """What all pipelines' edges may use: the setting, cut to the edge's memory limit;
        without one, ``DEFAULT_BUDGET_SHARE`` of that limit; None: no budget known."""
        budget, limit = self.settings.edge_memory_budget, self.edge_memory_limit
        if budget is None:
            return None if limit is None else int(limit * DEFAULT_BUDGET_SHARE)
        return budget if limit is None else min(budget, limit)

    async def _learn_edge_memory_limit(self) -> None:
        """Ask the edges for the memory limit they run under, until one answers."""
        for pipeline in list(self.pipelines.values()):
            if self._edge_memory_limit_known:
                return
            try:
                response = await self._http.get(pipeline.edge.url + PARTITION_INFO_PATH)
                limit = response.raise_for_status().json()["memory_limit_bytes"]
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                continue
            self.edge_memory_limit, self._edge_memory_limit_known = limit, True
            budget = self.settings.edge_memory_budget
            if limit is not None and budget is not None and budget > limit:
                log.warning(
                    "edge memory budget %s is over the %s the edge runs under: using %s",
                    _mib(budget),
                    _mib(limit),
                    _mib(limit),
                )

    async def _check_edge_room(self, option: Option, *, replaces_active: bool) -> None:
        """Refuse a new pipeline whose edge would overfill the budget: its edge is
        reckoned at the running pipelines' mean, since heads of one model differ less
        than what a process or a session costs, unless the backend knows better (a new
        hosted head shares its host's weights: ``HostedBackend.added_bytes``). A
        pipeline that replaces the active one
        (switch_on_demand) may pass the budget while the old one drains, up to the edge's
        memory limit: the budget is what stays, and refusing the switch would keep
        clients on the wrong cut for good (a hosted VGG16 pipeline on the 2 GiB Pi 4
        preset reckons at 974 MiB, so two never fit 80% of it)."""
        if not self.pipelines:
            return
        await self._learn_edge_memory_limit()
        budget = self.edge_memory_budget
        if budget is None:
            return
        cap, what = budget, BUDGET_NAME
        if replaces_active and self.edge_memory_limit is not None:
            cap, what = max(budget, self.edge_memory_limit), "edge's memory limit"
        used = await self.edge_memory_bytes()
        added = await self.launcher.backend.added_bytes(ServiceKind.EDGE_PARTITION)
        each = used / len(self.pipelines) if added is None else added
        if used + each > cap:
            raise EdgeMemoryError(
                f"cut {option.label} refused: a pipeline's edge adds about {_mib(each)} and "
                f"{len(self.pipelines)} pipelines use {_mib(used)} of the {_mib(cap)} {what}"
            )

    async def edge_memory_bytes(self) -> int:
        """What every pipeline's edge uses now (read at once: a switch may be waiting)."""
        backend = self.launcher.backend
        edges = [p.edge for p in self.pipelines.values()]
        sizes = await asyncio.gather(*(backend.memory_bytes(edge) for edge in edges))
        return sum(size or 0 for size in sizes)

    # -- what the read-only API shows ----------------------------------------------------

    def state(self) -> dict[str, object]:
        return {
            "model": self.settings.model_name,
            "strategy": self.settings.strategy.value,
            "current_cut": self.active.cut if self.active else None,
            "current_codec": self.active.codec if self.active else None,
            "active": self.active.id if self.active else None,
            "bandwidth_bps": self.estimator.current,
            "last_decision": self.last_decision,
            "switching": self.switching,
            "pin": self.pin.describe() if self.pin is not None else None,
            "edge_memory": {
                "budget_bytes": self.edge_memory_budget,
                "limit_bytes": self.edge_memory_limit,
            },
            "pipelines": [p.describe() for p in self.pipelines.values()],
        }


BUDGET_NAME = (
    "edge memory budget (NEUKONFIG_CONTROLLER_EDGE_MEMORY_BUDGET, or 80% of the edge's "
    "memory limit)"
)


def _mib(size: float) -> str:
    return f"{size / 2**20:.0f} MiB"
