"""The pull agent: the node's only connection to the coordinator, outbound HTTPS.

One loop, run inside ``dpn node serve`` when the node is enrolled:

1. run jobs that are ``running`` (approved by a person, or interrupted by a crash);
2. report every job state the coordinator has not acknowledged (awaiting approval, the
   signed answer, or the refusal and its reason);
3. long-poll ``/v1/jobs/poll`` for the next job, verify its envelope against the pinned
   coordinator key, record it, decide (policy, approval) and run it if automatic; or, for a
   step of a secure-aggregation round (``secagg_job``), run the step
   (:mod:`node._secure`, the round's secrets in memory only) and post its message to
   ``/v1/jobs/secagg``.

When the coordinator cannot be reached the agent says so (log, and ``dpn node status``, with
the address and the cause), backs off exponentially up to ``max_backoff_seconds`` and keeps
trying; on success it logs that it reconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from datetime import datetime, timedelta

import httpx
from pydantic import ValidationError
from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session

from node._db import AgentStatusRow, JobRow, NonceRow, utcnow
from node._enrolment import Enrolment, coordinator_tls
from node._errors import NodeError
from node._home import NodeContext
from node._jobs import (
    mark_reported,
    receive_job,
    run_job,
    runnable_jobs,
    stored_answer,
    unreported_jobs,
)
from node._secure import SecureRoundsMemory, handle_secagg_job
from node._storage import storage_failure
from protocols import (
    API_VERSION,
    COORDINATOR_ID,
    DEFAULT_MAX_AGE,
    Envelope,
    EnvelopeError,
    ErrorBody,
    JobSpec,
    JobState,
    MessageKind,
    PollBody,
    RefusalBody,
    ResultBody,
    SecAggJob,
    SignedEnvelope,
    StatusBody,
    open_envelope,
    seal_envelope,
)

__all__ = ["CoordinatorError", "PullAgent"]

log = logging.getLogger("node.agent")


class CoordinatorError(NodeError):
    """The coordinator answered, but not with what the protocol expects."""


class PullAgent:
    """Polls the coordinator for jobs and reports their outcomes (see the module docstring)."""

    def __init__(self, context: NodeContext, enrolment: Enrolment, *,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.context = context
        self.enrolment = enrolment
        self._transport = transport  # tests: an in-process or failing transport
        self._last_contact_note = 0.0
        self.failures = 0
        self.storage_failures = 0  # consecutive turns that found the node's disk full
        self._base = f"{enrolment.coordinator_url}/{API_VERSION}"
        self.secure_rounds = SecureRoundsMemory()  # secure-aggregation secrets: memory only

    # --- envelopes ----------------------------------------------------------------------

    def _seal(self, kind: MessageKind, body: dict[str, object]) -> SignedEnvelope:
        return seal_envelope(self.context.private_key, sender=self.context.settings.node_id,
                             recipient=COORDINATOR_ID, kind=kind, body=body)

    def _remember_nonce(self, sender: str, nonce: str, stamped_at: datetime) -> bool:
        table = NonceRow.__table__  # type: ignore[attr-defined]
        try:
            with self.context.engine.begin() as connection:
                connection.execute(delete(table).where(
                    table.c.stamped_at < utcnow() - 2 * DEFAULT_MAX_AGE))
                connection.execute(insert(table).values(sender=sender, nonce=nonce,
                                                        stamped_at=stamped_at))
        except IntegrityError:
            return False
        return True

    def _open(self, response: httpx.Response, kinds: set[MessageKind]) -> dict[str, object]:
        return self._open_envelope(response, kinds).body

    def _open_envelope(self, response: httpx.Response, kinds: set[MessageKind]) -> Envelope:
        try:
            signed = SignedEnvelope.model_validate_json(response.content)
            envelope = open_envelope(signed, public_key=self.enrolment.coordinator_public_key,
                                     recipient=self.context.settings.node_id, kinds=kinds,
                                     remember_nonce=self._remember_nonce)
        except (ValidationError, EnvelopeError) as exc:
            log.warning("refused a message from the coordinator at %s: %s", self._base, exc)
            raise CoordinatorError(f"refused a message from the coordinator: {exc}") from exc
        return envelope

    async def _send(self, client: httpx.AsyncClient, path: str, kind: MessageKind,
                    body: dict[str, object], *, timeout: float = 30.0) -> httpx.Response:
        response = await client.post(f"{self._base}{path}",
                                     json=self._seal(kind, body).model_dump(mode="json"),
                                     timeout=timeout)
        if response.status_code >= 500:
            raise httpx.HTTPStatusError(f"coordinator error HTTP {response.status_code}",
                                        request=response.request, response=response)
        if self.failures or time.monotonic() - self._last_contact_note > 5.0:
            await asyncio.to_thread(self._connected)
        return response

    # --- the loop -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set."""
        tls = coordinator_tls(self.context)
        async with httpx.AsyncClient(verify=tls, transport=self._transport) as client:
            while not stop.is_set():
                try:
                    await self.step(client)
                except (httpx.HTTPError, CoordinatorError) as exc:
                    delay = await asyncio.to_thread(self._failed, exc)
                except (OperationalError, OSError) as exc:
                    message = storage_failure(exc)
                    if message is None:
                        raise
                    delay = self._storage_failed(message)
                else:
                    self.storage_failures = 0
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)

    async def step(self, client: httpx.AsyncClient) -> JobSpec | SecAggJob | None:
        """One turn: run pending jobs, report, poll once, handle what came. Returns the job."""
        await self._run_pending()
        await self._report(client)
        job = await self._poll(client)
        if isinstance(job, SecAggJob):
            await self._secure_step(client, job)
        elif job is not None:
            await asyncio.to_thread(receive_job, context=self.context, spec=job)
            await self._run_pending()
            await self._report(client)
        return job

    async def _run_pending(self) -> None:
        for job_id in await asyncio.to_thread(runnable_jobs, engine=self.context.engine):
            try:
                row = await asyncio.to_thread(run_job, context=self.context, job_id=job_id)
            except Exception as exc:
                if storage_failure(exc) is not None:
                    raise  # the job stays running (nothing charged): retried once there is room
                log.exception("job %s failed at this node", job_id)
                await asyncio.to_thread(self._fail_job, job_id)
                continue
            log.info("job %s %s%s", job_id, row.state,
                     f": {row.outcome_message}" if row.outcome_message else "")

    def _fail_job(self, job_id: str) -> None:
        with Session(self.context.engine) as session:
            row = session.get(JobRow, job_id)
            if row is not None:
                row.state, row.outcome_reason = str(JobState.REFUSED), "failed"
                row.outcome_message = "the node could not compute this job; see its log"
                session.add(row)
                session.commit()

    async def _secure_step(self, client: httpx.AsyncClient, job: SecAggJob) -> None:
        """Run one step of a secure-aggregation round and post the node's message."""
        reply = await asyncio.to_thread(handle_secagg_job, context=self.context,
                                        memory=self.secure_rounds, job=job)
        response = await self._send(client, "/jobs/secagg", MessageKind.SECAGG_MESSAGE,
                                    reply.model_dump(mode="json"))
        if response.status_code == 200:
            self._open(response, {MessageKind.ACK})
        else:
            log.warning("coordinator refused this node's %s message of secure round %s: %s",
                        job.stage, job.round_id, _describe(response))

    async def _poll(self, client: httpx.AsyncClient) -> JobSpec | SecAggJob | None:
        wait = self.context.settings.poll_wait_seconds
        response = await self._send(client, "/jobs/poll", MessageKind.POLL,
                                    PollBody(wait_seconds=wait).model_dump(mode="json"),
                                    timeout=wait + 15)
        if response.status_code == 204:
            return None
        if response.status_code != 200:
            raise CoordinatorError(_describe(response))
        try:
            envelope = self._open_envelope(response, {MessageKind.JOB, MessageKind.SECAGG_JOB})
            if envelope.kind is MessageKind.SECAGG_JOB:
                return SecAggJob.model_validate(envelope.body)
            return JobSpec.model_validate(envelope.body)
        except ValidationError as exc:
            raise CoordinatorError(f"malformed job from the coordinator: {exc}") from exc

    async def _report(self, client: httpx.AsyncClient) -> None:
        for row in await asyncio.to_thread(unreported_jobs, engine=self.context.engine):
            state = JobState(row.state)
            if state is JobState.AWAITING_APPROVAL:
                path, kind = "/jobs/status", MessageKind.STATUS
                body = StatusBody(job_id=row.job_id, state=state,
                                  message="held for approval at the node").model_dump(mode="json")
            elif state is JobState.ANSWERED:
                answer = await asyncio.to_thread(stored_answer, engine=self.context.engine,
                                                 query_id=row.query_id)
                path, kind = "/jobs/result", MessageKind.RESULT
                body = ResultBody(job_id=row.job_id, answer=answer).model_dump(mode="json")
            else:
                path, kind = "/jobs/refusal", MessageKind.REFUSAL
                body = RefusalBody(job_id=row.job_id, reason=row.outcome_reason or "refused",
                                   message=row.outcome_message or "").model_dump(mode="json")
            response = await self._send(client, path, kind, body)
            if response.status_code == 200:
                self._open(response, {MessageKind.ACK})
            else:
                # The coordinator will never accept this report (e.g. the job expired there):
                # say so once and stop retrying it.
                log.warning("coordinator refused the report of job %s (%s): %s", row.job_id,
                            row.state, _describe(response))
            await asyncio.to_thread(mark_reported, engine=self.context.engine,
                                    job_id=row.job_id, state=row.state)

    # --- connection status ----------------------------------------------------------------

    def _status(self, session: Session) -> AgentStatusRow:
        row = session.get(AgentStatusRow, 1)
        if row is None:
            row = AgentStatusRow(id=1, coordinator_url=self.enrolment.coordinator_url)
        row.coordinator_url = self.enrolment.coordinator_url
        return row

    def _connected(self) -> None:
        self._last_contact_note = time.monotonic()
        if self.failures:
            log.info("reconnected to the coordinator at %s after %d failed attempt(s)",
                     self.enrolment.coordinator_url, self.failures)
        self.failures = 0
        with Session(self.context.engine) as session:
            row = self._status(session)
            row.connected, row.last_contact_at, row.consecutive_failures = True, utcnow(), 0
            row.last_error, row.next_retry_at, row.updated_at = None, None, utcnow()
            session.add(row)
            session.commit()

    def _storage_failed(self, message: str) -> float:
        """Log that the node's own disk is full; the delay before the next try (no DB write)."""
        self.storage_failures += 1
        ceiling = self.context.settings.max_backoff_seconds
        delay = min(ceiling, 2.0 ** min(self.storage_failures - 1, 16)) * random.uniform(0.8, 1.2)  # noqa: S311 - jitter
        log.error("%s; no job can be answered until there is room: retrying in %.0f s "
                  "(failure %d)", message, delay, self.storage_failures)
        return delay

    def _failed(self, exc: Exception) -> float:
        self.failures += 1
        ceiling = self.context.settings.max_backoff_seconds
        delay = min(ceiling, 2.0 ** min(self.failures - 1, 16)) * random.uniform(0.8, 1.2)  # noqa: S311 - jitter
        cause = f"{type(exc).__name__}: {exc}"
        log.warning("cannot reach the coordinator at %s: %s; retrying in %.0f s (failure %d)",
                    self.enrolment.coordinator_url, cause, delay, self.failures)
        with Session(self.context.engine) as session:
            row = self._status(session)
            row.connected, row.consecutive_failures = False, self.failures
            row.last_error = f"{self.enrolment.coordinator_url}: {cause}"[:1000]
            row.next_retry_at = utcnow() + timedelta(seconds=delay)
            row.updated_at = utcnow()
            session.add(row)
            session.commit()
        return delay


def _describe(response: httpx.Response) -> str:
    try:
        body = ErrorBody.model_validate_json(response.content)
        return f"HTTP {response.status_code} {body.error}: {body.message}"
    except ValidationError:
        return f"HTTP {response.status_code}: {response.text[:300]}"
