"""The rollout controller's I/O: the registry's rollouts in, its decisions out, on a tick.

- ``registry-events`` is read group-less from its end (every replica reads
  every event, as the gateway and the trainer do): each ``ROLLOUT_CHANGED``
  updates the :class:`~headwater.services.monitor.rollout_controller.RolloutController`;
- every ``rollout_tick_s``: ``GetRollout`` for the models first seen (or
  refused a decision), then ``decide(now)`` and one ``TransitionRollout`` per
  decision, expecting the revision it was made on. An accepted decision is an
  ``Alert`` on ``alerts`` and a counted decision; a refused one makes the
  controller read the rollout again: moved (someone else moved it), it is
  judged afresh; still at that revision (a promotion gate failed), it is
  blocked, the decision held and tried again later, a ``rollout.blocked``
  ``Alert`` raised once per reason;
- ``PROMOTION_GATES_CHANGED`` tries a blocked decision of the model at once;
- every registry call has the client's deadline; an unreachable registry is
  logged (when it goes and when it is back) and tried again at the next tick.

The stream agents only feed the pure controller: nothing here is on their path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaConsumer

from headwater.services.monitor import convert
from headwater.services.monitor.domain import AlertRaised
from headwater.services.monitor.rollout_controller import (
    RolloutController,
    RolloutsSnapshot,
    Transition,
)
from headwater.services.monitor.settings import MonitorSettings
from headwater.shared.bus.consumer import assign_all_partitions, follow_registry_events
from headwater.shared.bus.topics import Topic
from headwater.shared.errors import (
    FailedPrecondition,
    HeadwaterError,
    InvalidInput,
    NotFound,
    Unavailable,
)
from headwater.shared.pb import events_pb2
from headwater.shared.registry_client import RegistryClient

log = logging.getLogger(__name__)

#: Most models whose rollout one tick asks the registry for (the rest wait a tick).
REFRESHES_PER_TICK = 32


class _Reachability:
    """Logs the registry going away and coming back, not every failed call."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.up = True

    def failed(self, what: str, err: Exception) -> None:
        if self.up:
            log.warning(
                "registry unreachable: rollouts wait, retried every tick",
                extra={"target": self.target, "call": what, "error": str(err)},
            )
        self.up = False

    def succeeded(self) -> None:
        if not self.up:
            log.info("registry reachable again", extra={"target": self.target})
        self.up = True


class RolloutDriver:
    """Runs the rollout controller against the registry: ``start()``, then ``stop()``.

    Args:
        settings: Broker, app id and the tick.
        controller: The pure controller the stream agents feed.
        registry: A registry client (its deadline bounds every call).
        publish_alert: Publishes an accepted decision's alert.
        owned_partitions: The ``examples`` partitions this replica holds now.
        clock: Wall-clock seconds.

    """

    def __init__(
        self,
        settings: MonitorSettings,
        controller: RolloutController,
        registry: RegistryClient,
        publish_alert: Callable[[AlertRaised], None],
        owned_partitions: Callable[[], frozenset[int]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._controller = controller
        self._registry = registry
        self._publish_alert = publish_alert
        self._owned = owned_partitions
        self._clock = clock
        self._reachability = _Reachability(registry.target)
        self._consumer: AIOKafkaConsumer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def snapshot(self) -> RolloutsSnapshot:
        """The controller's rollouts and decisions now."""
        return self._controller.snapshot(self._owned())

    async def start(self) -> None:
        """Read registry-events from its end, then tick in the background.

        Raises:
            Unavailable: The broker did not answer in time.

        """
        settings = self._settings
        assigned = await assign_all_partitions(
            settings.kafka,
            [Topic.REGISTRY_EVENTS],
            from_beginning=False,
            client_id=f"{settings.app_id}-registry-events",
        )
        self._consumer = assigned.consumer
        reading = self._read_events(assigned.consumer)
        self._tasks = [
            asyncio.create_task(reading, name="monitor-rollout-events"),
            asyncio.create_task(self._tick_forever(), name="monitor-rollout-tick"),
        ]

    async def stop(self, grace_s: float) -> None:
        """Stop ticking and reading (a registry call in flight is cancelled)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._consumer is not None:
            with contextlib.suppress(Exception):  # stopping: nothing left to read it for
                async with asyncio.timeout(grace_s):
                    await self._consumer.stop()
            self._consumer = None

    def on_registry_event(self, event: events_pb2.RegistryEvent) -> None:
        """Follow a rollout the registry changed, and changed promotion gates."""
        if event.kind == events_pb2.REGISTRY_EVENT_KIND_ROLLOUT_CHANGED and event.HasField(
            "rollout"
        ):
            self._controller.track(convert.rollout_from_proto(event.rollout))
        elif event.kind == events_pb2.REGISTRY_EVENT_KIND_PROMOTION_GATES_CHANGED:
            self._controller.gates_changed(event.model)

    async def tick(self) -> None:
        """Read the rollouts due, then make every decision the controller asks for."""
        await self._refresh(self._controller.models_to_refresh()[:REFRESHES_PER_TICK])
        for transition in self._controller.decide(self._clock(), self._owned()):
            await self._transition(transition)
        for alert in self._controller.drain_alerts():  # rollouts found blocked this tick
            log.warning("rollout blocked", extra={"model": alert.model, "reason": alert.message})
            self._publish_alert(alert)

    async def _tick_forever(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # a bug must not end the controller: log it, tick again
                log.exception("rollout tick failed")
            await asyncio.sleep(self._settings.rollout_tick_s)

    async def _read_events(self, consumer: AIOKafkaConsumer) -> None:
        await follow_registry_events(consumer, self.on_registry_event)

    async def _refresh(self, models: Sequence[str]) -> None:
        answers = await asyncio.gather(
            *(self._registry.get_rollout(model) for model in models), return_exceptions=True
        )
        for model, answer in zip(models, answers, strict=True):
            if isinstance(answer, NotFound):  # no rollout (or no such model) yet
                self._reachability.succeeded()
                self._controller.no_rollout(model)
            elif isinstance(answer, Unavailable):
                self._reachability.failed("GetRollout", answer)
            elif isinstance(answer, Exception):
                log.error("cannot read a rollout", extra={"model": model, "error": repr(answer)})
            elif isinstance(answer, BaseException):
                raise answer
            else:
                self._reachability.succeeded()
                self._controller.reread(convert.rollout_from_proto(answer), self._clock())

    async def _transition(self, transition: Transition) -> None:
        rollout, decision = transition.rollout, transition.decision
        try:
            after = await self._registry.transition_rollout(
                rollout.model,
                decision.action.value,
                reason=decision.reason,
                evidence=transition.evidence,
                expected_revision=rollout.revision,
                rollout_id=rollout.rollout_id,
            )
        except Unavailable as err:  # the decision is made again at the next tick
            self._reachability.failed("TransitionRollout", err)
            return
        except (FailedPrecondition, InvalidInput, NotFound) as err:
            self._reachability.succeeded()
            self._refused(transition, err)
            await self._refresh([rollout.model])
            return
        except HeadwaterError as err:
            log.error("rollout decision failed", extra=_extra(transition, error=repr(err)))
            return
        self._reachability.succeeded()
        alert = self._controller.accepted(
            transition, convert.rollout_from_proto(after), self._clock()
        )
        log.info("rollout decision made", extra=_extra(transition, reason=decision.reason))
        self._publish_alert(alert)

    def _refused(self, transition: Transition, err: HeadwaterError) -> None:
        log.warning(
            "rollout decision refused: reading the rollout again",
            extra=_extra(transition, error=str(err)),
        )
        self._controller.refused(transition, str(err))


def _extra(transition: Transition, **more: str) -> dict[str, object]:
    rollout = transition.rollout
    return {
        "model": rollout.model,
        "rollout_id": rollout.rollout_id,
        "action": transition.action.value,
        "revision": rollout.revision,
        **more,
    }
