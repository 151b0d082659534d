"""kopf handlers: the operator's only I/O with the cluster (`python -m rlhf_operator`).

Design, chosen to keep API writes to what the run needs (<= 20 per 3-stage run):
- Only `@kopf.on.event` and `@kopf.index` handlers: kopf then writes nothing itself (no
  finalizers, no progress or last-handled-configuration annotations), and handler outcomes are
  not posted as events (settings.posting.enabled = False).
- No finalizer: children carry ownerReferences (the PVC only with retention Delete), so the
  garbage collector does the deletion.
- Events only mark a run dirty; a per-run work queue runs `reconcile` (pure) and applies its
  actions: create-if-absent children, job suspend patches, ONE status patch when the status
  changed, one event per transition. Errors and retry backoffs requeue the run.
- kopf indexes of the stage jobs are complete before any handler runs, so a restarted operator
  sees existing jobs and creates no duplicates (names are deterministic: 409 = already there).
- One index and one event handler per launcher (launchers.KUBERNETES_LAUNCHERS): a new job kind
  needs no change here.
- Order of a pass's writes: children and job patches, then the events, then the status patch,
  then finalizer releases. An event is posted before the status that records its transition:
  if the operator dies in between, the next pass computes the same transition and re-posts the
  same deterministically named event (409), so no transition's event is lost. A stage job's
  finalizer is released as soon as its outcome is stored (not kept for the job's life).
- Identity and refusals (writes.py, reconcile/blocked.py): only jobs this run's uid controls
  are followed; a 4xx on a write becomes Stalled in the status, not a crash loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from rlhf_api import reasons
from rlhf_api.naming import RUN_LABEL, RUN_NAME_ANNOTATION, configmap_name, label_value, labels
from rlhf_api.spec import GROUP, PLURAL, VERSION
from rlhf_api.status import RLHFRunStatus, RunPhase

from ..api_ref import CONFIGMAPS, EVENTS, PODS, ApiRef
from ..estimate import fit_warnings
from ..launchers import KUBERNETES_LAUNCHERS, Launcher, launcher_of, release_patch
from ..manifests.configmap import started_config
from ..observed_job import ObservedJob
from ..pod_result import failure_message, label_selector, matches, result_from_pods
from ..pod_waiting import pods_started, why_waiting
from ..reconcile import (
    Create,
    Outcome,
    ProgressReading,
    event_body,
    jobs_followed,
    jobs_to_inspect,
    load_status,
    parse_time,
    reconcile,
    results_needed,
)
from ..reconcile.attempts import pods_left, previous_attempts
from ..reconcile.blocked import Blocked
from ..settings import OperatorSettings
from . import metrics
from .kube_client import ApiError, Connection, KubeClient
from .leader import LeaderElection
from .log_reader import ProgressReader
from .writes import apply_children, is_controlled_by, is_job, split_by_owner

logger = logging.getLogger(__name__)

RUNS = ApiRef(GROUP, VERSION, PLURAL)
RunKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class Tuning:
    """Timing knobs; tests shorten them (memo["tuning"])."""

    concurrency: int = 16
    error_backoff: float = 1.0
    error_backoff_max: float = 60.0
    expectation_seconds: float = 30.0  # a created job not reported by the watch by then is re-checked
    api_error_backoffs: tuple[float, ...] = (1, 1, 2, 3, 5, 8, 13, 21)
    watch_reconnect_backoff: float = 0.1
    watch_client_timeout: float | None = None  # reconnect watches this often (tests: fault injection)
    refusal_backoff: float = 5.0  # a refused write (4xx) is retried after this, doubling...
    refusal_backoff_max: float = 300.0  # ...up to this


@dataclass
class Runtime:
    """The operator's in-memory state (in kopf's memo)."""

    settings: OperatorSettings
    tuning: Tuning
    client: KubeClient
    queue: Any = None  # WorkQueue[RunKey]
    runs: dict[RunKey, dict[str, Any]] = field(default_factory=dict)
    by_label: dict[tuple[str, str], RunKey] = field(default_factory=dict)
    # Status we wrote and the resourceVersion it got: newer than the body until the watch says so.
    written: dict[str, tuple[str | None, dict[str, Any]]] = field(default_factory=dict)
    # Jobs we created that the watch has not reported yet: (run key) -> {job name: deadline}.
    expected: dict[RunKey, dict[str, float]] = field(default_factory=dict)
    job_indexes: dict[str, Any] = field(default_factory=dict)
    phases: dict[RunKey, RunPhase] = field(default_factory=dict)
    progress: ProgressReader | None = None  # Master pod logs of running stages (log_reader.py)
    refusals: dict[RunKey, int] = field(default_factory=dict)  # passes in a row with a refused write
    leader: LeaderElection | None = None  # None: no election, this process always acts
    leader_task: asyncio.Task[None] | None = None
    # Finalizer releases done, by (namespace, job, resourceVersion released): not sent twice
    # while the watch lags. Bounded: cleared when it grows large (a re-send is harmless).
    released: set[tuple[str, str, str]] = field(default_factory=set)


class EventsOnlyDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf deep-copies every event's body to diff it for change handlers (on.create/update/
    field). This operator has none (only event and index handlers), so the essence is empty:
    the single biggest CPU saving per event. Nothing is ever stored (no annotations written)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()


def _acting(runtime: Runtime) -> bool:
    """This replica may write: it holds the lease, or there is no election."""
    return runtime.leader is None or runtime.leader.is_leader()


def _is_new(runtime: Runtime, key: RunKey) -> bool:
    """No status written yet: the run waits for its first job (served before progressing runs)."""
    body = runtime.runs.get(key) or {}
    uid = str((body.get("metadata") or {}).get("uid") or "")
    return not body.get("status") and uid not in runtime.written


def _runtime(memo: Any) -> Runtime:
    runtime: Runtime = memo["rlhf"]
    return runtime


def _index_id(launcher: Launcher) -> str:
    return f"rlhf_{launcher.api.plural}"


def _capture_indexes(runtime: Runtime, kwargs: Mapping[str, Any]) -> None:
    for launcher in KUBERNETES_LAUNCHERS.values():
        name = _index_id(launcher)
        if name in kwargs and name not in runtime.job_indexes:
            runtime.job_indexes[name] = kwargs[name]


# --- lifecycle -------------------------------------------------------------------------------


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Every setting of the operator in one place: kopf's behaviour, ours, the API connection."""
    from .workqueue import WorkQueue

    operator_settings = memo.get("settings") or OperatorSettings.from_env(os.environ)
    tuning = memo.get("tuning") or Tuning()
    connection = memo.get("connection") or Connection.from_environment()

    settings.posting.enabled = False  # our events are one per transition, posted by us
    settings.networking.error_backoffs = tuning.api_error_backoffs
    settings.watching.reconnect_backoff = tuning.watch_reconnect_backoff
    settings.watching.server_timeout = 600  # the API server ends each watch after 10 min; kopf re-watches
    settings.watching.client_timeout = tuning.watch_client_timeout
    settings.persistence.finalizer = "rlhf.dev/unused-finalizer"  # never added: no deletion handlers
    settings.persistence.diffbase_storage = EventsOnlyDiffBase()
    for job_launcher in KUBERNETES_LAUNCHERS.values():
        # The API server filters the stage-job lists and watches (existence selector): jobs of
        # other tools never reach the operator (the handlers' labels= filter is client-side).
        settings.watching.label_selectors[job_launcher.api.group, job_launcher.api.plural] = RUN_LABEL

    runtime = Runtime(settings=operator_settings, tuning=tuning, client=KubeClient(connection))
    runtime.progress = ProgressReader(
        runtime.client, operator_settings.progress_interval_seconds, operator_settings.progress_tail_lines
    )
    if operator_settings.leader_election_namespace:
        identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        runtime.leader = LeaderElection(runtime.client, operator_settings.leader_election_namespace, identity)
        runtime.leader_task = asyncio.create_task(runtime.leader.run(), name="leader election")

    async def process(key: RunKey) -> float | None:
        if not _acting(runtime):
            return runtime.leader.renew_seconds if runtime.leader else None  # a standby: look again later
        try:
            return await reconcile_run(runtime, key)
        except ApiError as error:
            metrics.RECONCILE_ERRORS.labels(kind="api" if error.transient else "rejected").inc()
            raise
        except Exception:
            metrics.RECONCILE_ERRORS.labels(kind="internal").inc()
            raise

    runtime.queue = WorkQueue(
        process,
        concurrency=tuning.concurrency,
        error_backoff=tuning.error_backoff,
        error_backoff_max=tuning.error_backoff_max,
        priority=lambda key: 0 if _is_new(runtime, key) else 1,
    )
    memo["rlhf"] = runtime
    metrics.serve(operator_settings.metrics_port)


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    runtime = memo.get("rlhf")
    if runtime is not None:
        if runtime.leader_task is not None:
            runtime.leader_task.cancel()
        await runtime.queue.close()
        await runtime.client.close()


# --- watching ----------------------------------------------------------------------------------


def _watch_jobs(launcher: Launcher) -> None:
    """An index of the launcher's stage jobs by run, and an event handler that marks runs dirty.
    async: kopf runs sync handlers in a thread pool; these are cheap and pure."""
    api = launcher.api

    async def index(namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any) -> Any:
        return {(namespace or "", labels[RUN_LABEL]): launcher.observe(body)}

    async def changed(
        namespace: str | None, labels: Mapping[str, str], body: kopf.Body, memo: kopf.Memo, **kwargs: Any
    ) -> None:
        await _job_changed(_runtime(memo), launcher, namespace, labels, body, kwargs)

    present = {RUN_LABEL: kopf.PRESENT}
    kopf.index(api.group, api.version, api.plural, labels=present, id=_index_id(launcher))(index)
    kopf.on.event(api.group, api.version, api.plural, labels=present, id=f"{launcher.name}_event")(changed)


for _launcher in KUBERNETES_LAUNCHERS.values():
    _watch_jobs(_launcher)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def run_event(event: Mapping[str, Any], body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    runtime = _runtime(memo)
    _capture_indexes(runtime, kwargs)
    meta = body.get("metadata") or {}
    key: RunKey = (str(meta.get("namespace") or ""), str(meta.get("name")))
    if event.get("type") == "DELETED":
        forget_run(runtime, key, str(meta.get("uid") or ""))
        if _acting(runtime):
            await _release_jobs_of_deleted_run(runtime, key)
        return
    raw = dict(body)
    uid = str(meta.get("uid") or "")
    known = runtime.runs.get(key)
    if known is not None and (known.get("metadata") or {}).get("uid") != uid:
        forget_run(runtime, key, str((known.get("metadata") or {}).get("uid") or ""))  # recreated
    runtime.runs[key] = raw
    runtime.by_label[(key[0], label_value(key[1]))] = key
    cached = runtime.written.get(uid)
    if cached is not None and cached[0] is not None and cached[0] == meta.get("resourceVersion"):
        # The watch caught up with our own status write: nothing new (a pass is a fixed point
        # of its own output), so no pass either.
        del runtime.written[uid]
        return
    runtime.queue.add(key)


async def _job_changed(
    runtime: Runtime,
    launcher: Launcher,
    namespace: str | None,
    labels: Mapping[str, str],
    body: kopf.Body,
    kwargs: Mapping[str, Any],
) -> None:
    _capture_indexes(runtime, kwargs)
    key = runtime.by_label.get((namespace or "", labels[RUN_LABEL]))
    job = launcher.observe(body)
    if key is None:
        if job.deleting and job.held and _acting(runtime):
            await _release_orphan(runtime, launcher, namespace, body, job)
        return
    expected = runtime.expected.get(key, {})
    if job.name in expected and job.state == "Pending":
        # Our own create reported back, as the last pass assumed it: nothing to do.
        del expected[job.name]
        return
    runtime.queue.add(key)


async def _release_jobs_of_deleted_run(runtime: Runtime, key: RunKey) -> None:
    """Jobs already being deleted when their run's deletion arrived (the watches of runs and
    jobs are not ordered): no later event would bring them back here."""
    index_key = (key[0], label_value(key[1]))
    for launcher in KUBERNETES_LAUNCHERS.values():
        index = runtime.job_indexes.get(_index_id(launcher)) or {}
        for job in list(index.get(index_key, ())):
            if job.deleting and job.held:
                await _release(runtime, launcher, key[0], job, run_name=key[1])


async def _release_orphan(
    runtime: Runtime, launcher: Launcher, namespace: str | None, body: kopf.Body, job: ObservedJob
) -> None:
    """A deleted stage job whose run this operator does not know: release it only when the run
    is really gone (deleted, or recreated with another uid), not merely not seen yet."""
    run_name = ((body.get("metadata") or {}).get("annotations") or {}).get(RUN_NAME_ANNOTATION)
    await _release(runtime, launcher, namespace, job, run_name=str(run_name) if run_name else None)


async def _release(
    runtime: Runtime, launcher: Launcher, namespace: str | None, job: ObservedJob, run_name: str | None
) -> None:
    if run_name:
        run = await runtime.client.get(RUNS, namespace, run_name)
        if run is not None and (run.get("metadata") or {}).get("uid") in (job.owner_uid, None):
            return  # the run exists: its own pass records the outcome, then releases
    metrics.API_WRITES.labels(verb="patch").inc()
    try:
        await runtime.client.patch(launcher.api, namespace, job.name, release_patch(job))
    except ApiError as error:
        if error.status not in (404, 409):  # gone already, or changed: the next event retries
            raise


def forget_run(runtime: Runtime, key: RunKey, uid: str) -> None:
    """Drop what is kept about the run of this uid. Kept by (namespace, name) for the watch's
    sake, so only while that name still holds this uid: a late DELETED of a deleted run (kopf
    handles each uid's events on its own) must not drop the state of its re-created namesake."""
    runtime.written.pop(uid, None)
    known = str(((runtime.runs.get(key) or {}).get("metadata") or {}).get("uid") or "")
    if known and uid and known != uid:
        return
    if runtime.progress is not None:
        runtime.progress.forget(key[0], jobs_followed((runtime.runs.get(key) or {}).get("status")))
    runtime.runs.pop(key, None)
    runtime.expected.pop(key, None)
    runtime.phases.pop(key, None)
    runtime.refusals.pop(key, None)
    runtime.by_label.pop((key[0], label_value(key[1])), None)
    runtime.queue.forget(key)
    metrics.set_run_phases(runtime.phases)


# --- one reconcile pass ------------------------------------------------------------------------


def observed_jobs(runtime: Runtime, key: RunKey, uid: str) -> tuple[dict[str, ObservedJob], dict[str, ObservedJob]]:
    """The run's jobs from the indexes, plus ones we created that the watch has not shown yet;
    and the foreign ones: labelled for this run's name, not controlled by its uid (writes.py)."""
    index_key = (key[0], label_value(key[1]))
    indexed: dict[str, ObservedJob] = {}
    for index in runtime.job_indexes.values():
        for job in index.get(index_key, ()):
            indexed[job.name] = job
    jobs, foreign = split_by_owner(indexed, uid)
    expected = runtime.expected.get(key, {})
    now = time.monotonic()
    for name, deadline in list(expected.items()):
        if name in jobs or deadline < now:
            del expected[name]
        elif name not in foreign:
            jobs[name] = ObservedJob(name=name, state="Pending")
    return jobs, foreign


async def reconcile_run(runtime: Runtime, key: RunKey) -> float | None:
    body = runtime.runs.get(key)
    if body is None:
        return None
    metrics.RECONCILES.inc()
    meta = body.get("metadata") or {}
    uid = str(meta.get("uid") or "")
    cached = runtime.written.get(uid)
    if cached is not None:
        body = {**body, "status": cached[1]}
    launcher = launcher_of(body)
    jobs, foreign = observed_jobs(runtime, key, uid)
    for name in jobs_followed(body.get("status")):
        if name not in jobs and name not in foreign:
            # Not in the index: ask the API server before concluding it is gone (a watch can lag).
            found = await runtime.client.get(launcher.api, key[0], name)
            if found is not None:
                (jobs if is_controlled_by(found, uid) else foreign)[name] = launcher.observe(found)
    for name in results_needed(body.get("status"), jobs):
        pods = await _master_pods(runtime, key[0], name, launcher)
        result, error = result_from_pods(pods, launcher.master_pod_selector(name), launcher.result_container)
        if jobs[name].state == "Succeeded":
            jobs[name] = dataclasses.replace(jobs[name], result=result, result_error=error)
        else:
            message = failure_message(jobs[name].message, result, pods)
            jobs[name] = dataclasses.replace(jobs[name], message=message, result=result)

    for name in jobs_to_inspect(body.get("status"), jobs):
        jobs[name] = await _inspect_start(runtime, key, jobs[name])
    lingering = await _previous_attempt_pods(runtime, key, body, jobs)
    readings: dict[str, ProgressReading] = {}
    next_read: float | None = None
    if runtime.progress is not None:
        status = load_status(body.get("status"))
        readings, next_read = await runtime.progress.read_due(key[0], status, jobs, launcher)

    now = datetime.now(UTC)
    blocked = Blocked(foreign=foreign)
    started: dict[str, dict[str, Any]] | None = None
    for _round in range(5):  # each round can only add findings; 5 covers configs read, volume, config, job, patch
        outcome = reconcile(
            body,
            jobs,
            now,
            runtime.settings,
            fit_check=fit_warnings,
            lingering=lingering,
            progress=readings,
            blocked=blocked,
            started_configs=started,
        )
        if outcome.config_reads and started is None:
            # A rejected spec edit: the stages' started configs name what changed (one GET each).
            started = await _started_configs(runtime, key, outcome.config_reads)
            continue
        try:
            findings = await apply_children(runtime, key, uid, outcome, blocked)
        except ApiError as error:
            if error.status == 404 and key not in runtime.runs:
                return None  # deleted meanwhile
            raise
        if not findings:
            break
        blocked = Blocked(
            foreign={**blocked.foreign, **findings.foreign}, refused={**blocked.refused, **findings.refused}
        )
    requeue = outcome.requeue_after
    for event in outcome.events:
        await _post_event(runtime, event.body)
    try:
        patch = outcome.status_patch
        if patch:
            metrics.API_WRITES.labels(verb="patch").inc()
            answer = await runtime.client.patch(RUNS, key[0], key[1], {"status": patch}, subresource="status")
            version = (answer.get("metadata") or {}).get("resourceVersion")
            runtime.written[uid] = (version, outcome.new_status)
        for end in outcome.ends:  # after the status patch: the outcome is stored before the job goes
            metrics.API_WRITES.labels(verb="delete").inc()
            try:
                await runtime.client.delete(end.api, key[0], end.name)
            except ApiError as error:
                if error.status != 404:
                    raise
    except ApiError as error:
        if error.status == 404 and key not in runtime.runs:
            return None  # deleted meanwhile
        if error.transient or error.status == 409:
            raise
        # The status itself refused: nothing else can say it; an event and a capped retry,
        # doubling from pass to pass (the count is only cleared once a pass writes no refusal).
        await _post_event(runtime, _status_refused_event(body, error))
        return _refusal_backoff(runtime, key, requeue)
    if blocked.refused:
        # Refused for good until something changes (a quota, the spec): retried, capped.
        requeue = _refusal_backoff(runtime, key, requeue)
    else:
        runtime.refusals.pop(key, None)
    _record_metrics(runtime, key, load_status(outcome.old_status), outcome)  # as soon as the status is stored
    for release in outcome.releases:
        version = (release.patch.get("metadata") or {}).get("resourceVersion")
        if (key[0], release.name, version) in runtime.released:
            continue  # released already; the index has not seen it yet
        metrics.API_WRITES.labels(verb="patch").inc()
        try:
            await runtime.client.patch(release.api, key[0], release.name, release.patch)
            if version:
                if len(runtime.released) > 10_000:
                    runtime.released.clear()
                runtime.released.add((key[0], release.name, str(version)))
        except ApiError as error:
            if error.transient:
                raise
            if error.status not in (404, 409):  # 409: changed meanwhile; its next event brings a new pass
                logger.warning("release of %s refused: %s", release.name, error)
    waits = [w for w in (requeue, next_read) if w is not None]
    if any(isinstance(a, Create) and is_job(a.api) for a in outcome.writes):
        # No pod watch, and the watch's report of our own create starts no pass: look at the
        # new attempt's pods soon (why they wait, if they do).
        waits.append(runtime.settings.pod_start_check_seconds)
    return min(waits) if waits else None  # a timed transition, a pod check, the next progress read, a refusal


async def _previous_attempt_pods(
    runtime: Runtime, key: RunKey, body: Mapping[str, Any], jobs: Mapping[str, ObservedJob]
) -> dict[tuple[str, int], tuple[str, ...]]:
    """Pods of the attempts a next one may follow in this pass that still run: it waits for them."""
    found: dict[tuple[str, int], tuple[str, ...]] = {}
    for stage, attempt in previous_attempts(load_status(body.get("status")), jobs):
        found[(stage, attempt)] = pods_left(await _attempt_pods(runtime, key, stage, attempt))
    return found


async def _attempt_pods(runtime: Runtime, key: RunKey, stage: str, attempt: int) -> list[dict[str, Any]]:
    """The pods of one attempt, by the labels the operator put on them (any launcher); filtered
    here too: the API server filters by the selector, an emulator may not."""
    wanted = labels(key[1], stage, attempt)
    pods = await runtime.client.list(PODS, key[0], label_selector(wanted))
    return [p for p in pods if matches((p.get("metadata") or {}).get("labels") or {}, wanted)]


async def _inspect_start(runtime: Runtime, key: RunKey, job: ObservedJob) -> ObservedJob:
    """An attempt not started yet: its pods, and with no pod at all the Warning events about the
    job (pods refused by admission, e.g. Pod Security, are never created)."""
    if job.stage is None or job.attempt is None:
        return job
    try:
        pods = await _attempt_pods(runtime, key, job.stage, job.attempt)
        events: list[dict[str, Any]] = []
        if not pods:
            events = await runtime.client.list(EVENTS, key[0], field_selector="type=Warning")
    except ApiError as error:
        # Informational (the start deadline holds without it): never block the pass; the next
        # look (pod_start_check_seconds) tries again.
        logger.warning("%s/%s: cannot read the pods of job %s: %s", key[0], key[1], job.name, error)
        return job
    return dataclasses.replace(job, pods_started=pods_started(pods), waiting=why_waiting(pods, events, job.name))


async def _started_configs(runtime: Runtime, key: RunKey, stages: list[str]) -> dict[str, dict[str, Any]]:
    """The config file each stage started with, from its ConfigMap (what cannot be read: left out)."""
    found: dict[str, dict[str, Any]] = {}
    for stage in stages:
        try:
            configmap = await runtime.client.get(CONFIGMAPS, key[0], configmap_name(key[1], stage))
        except ApiError as error:
            logger.info("%s/%s: the started config of %s is unreadable: %s", key[0], key[1], stage, error)
            continue
        config = started_config(configmap)
        if config is not None:
            found[stage] = config
    return found


def _refusal_backoff(runtime: Runtime, key: RunKey, requeue: float | None) -> float:
    count = runtime.refusals.get(key, 0)
    runtime.refusals[key] = count + 1
    tuning = runtime.tuning
    delay = min(tuning.refusal_backoff_max, tuning.refusal_backoff * 2**count)
    return delay if requeue is None else min(requeue, delay)


def _status_refused_event(body: Mapping[str, Any], error: ApiError) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    message = f"status update refused by the API server (HTTP {error.status}): {error.message}"
    return event_body(
        meta, f"status-refused-{error.message}", "Warning", reasons.CREATE_REFUSED, message, datetime.now(UTC)
    )


async def _master_pods(runtime: Runtime, namespace: str, job: str, launcher: Launcher) -> list[dict[str, Any]]:
    """The stage's Master pod: by its name when the launcher makes it predictable (one cheap
    GET), else by label selector."""
    name = launcher.master_pod_name(job)
    if name is not None:
        pod = await runtime.client.get(PODS, namespace, name)
        if pod is not None:
            return [pod]
    return await runtime.client.list(PODS, namespace, label_selector(launcher.master_pod_selector(job)))


async def _post_event(runtime: Runtime, body: dict[str, Any]) -> None:
    """Best effort, one retry: events are informational, a lost one must not block the run."""
    for _attempt in range(2):
        try:
            metrics.API_WRITES.labels(verb="create").inc()
            await runtime.client.create(EVENTS, body)
            return
        except ApiError as error:
            if not error.transient:
                logger.warning("event %s rejected: %s", body["metadata"]["name"], error)
                return
    logger.warning("event %s not posted", body["metadata"]["name"])


def _record_metrics(runtime: Runtime, key: RunKey, old: RLHFRunStatus, outcome: Outcome) -> None:
    new = outcome.status
    if runtime.phases.get(key) != new.phase:
        runtime.phases[key] = new.phase
        metrics.set_run_phases(runtime.phases)
    before = {s.name: s.phase for s in old.stages}
    for stage in new.stages:
        if stage.phase in ("Succeeded", "Failed") and before.get(stage.name) != stage.phase:
            start, end = stage.start_time, stage.completion_time
            if start and end:
                began, ended = parse_time(start), parse_time(end)
                if began and ended:
                    metrics.STAGE_SECONDS.labels(stage=stage.name, outcome=stage.phase).observe(
                        (ended - began).total_seconds()
                    )
