"""Customers and instances: deploy an integration to a customer with its config values."""

from __future__ import annotations

import datetime
import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from splice.config import ConfigValues, resolve_config
from splice.definition.expressions import compile_value, references
from splice.definition.model import Integration, ScheduleTrigger, WebhookTrigger
from splice.errors import ConfigError, ExpressionError, NotFoundError, RequestError
from splice.service.sealing import Sealer
from splice.store import RecordStore
from splice.store.records import utc
from splice.store.tables import customers, instances, schedule_states, webhook_endpoints
from splice.triggers.schedule import Schedule, ScheduleError

TOKEN_BYTES = 24  # 192 random bits in each webhook URL
# Seconds a loaded instance or a webhook token's target is used before it is read again, so
# a redeploy, a disable or a removed flow takes effect within this time in every process.
CACHE_SECONDS = 1.0


@dataclass(frozen=True)
class Instance:
    """One integration deployed to one customer."""

    id: str
    customer_id: str
    customer: str
    integration_key: str
    integration_name: str
    integration_version: str | None
    definition_path: str | None
    enabled: bool
    created_at: datetime.datetime
    updated_at: datetime.datetime


@dataclass(frozen=True)
class LoadedInstance:
    """An instance with its integration and config values, ready to run."""

    instance: Instance
    integration: Integration
    config: ConfigValues


@dataclass(frozen=True)
class Endpoint:
    """The instance and flow that a webhook URL token starts."""

    token: str
    instance_id: str
    flow: str


@dataclass(frozen=True)
class Deployment:
    """The result of a deploy: the instance, whether it is new, its webhook URLs and schedules."""

    instance: Instance
    created: bool
    webhooks: dict[str, str]  # flow -> URL
    schedules: dict[str, tuple[str, str]]  # flow -> (cron, time zone)


def webhook_url(base_url: str, token: str) -> str:
    """Return the public URL of the webhook with ``token`` under ``base_url``."""
    return f"{base_url.rstrip('/')}/webhooks/{token}"


class Instances:
    """Deploys integrations to customers and finds instances, endpoints and schedules."""

    def __init__(
        self, store: RecordStore, sealer: Sealer, *, base_url: str, clock: Any = time.time
    ) -> None:
        self.store = store
        self.clock = clock
        self.sealer = sealer
        self.base_url = base_url
        # Loaded instances by id, with when they were read; checked against updated_at once
        # CACHE_SECONDS passed, so a redeploy is seen.
        self._loaded: dict[str, tuple[float, LoadedInstance]] = {}
        self._endpoints: dict[str, tuple[float, Endpoint | None]] = {}
        self._lock = threading.Lock()

    # -- deploying ------------------------------------------------------------------------

    def deploy(
        self,
        integration: Integration,
        *,
        customer: str,
        assignments: Iterable[str] = (),
        config_file: Path | None = None,
    ) -> Deployment:
        """Create or update the customer's instance of the integration.

        Config values come from ``--config NAME=VALUE`` assignments and a config file only,
        never from this process's environment, so a deployment means the same on any host.
        Webhook flows keep their URL across updates, and a flow that became a webhook gets
        a new one. Raises RequestError for an empty customer name and ConfigError for a
        missing or invalid config value or schedule.
        """
        customer = customer.strip()
        if not customer:
            raise RequestError("the customer name is empty; give one with --customer NAME")
        config = resolve_config(
            integration, assignments=assignments, config_file=config_file, environ=None
        )
        schedules = self._schedules(integration, config)
        sealed = self.sealer.seal(
            json.dumps({"values": config.values, "secrets": config.secrets}).encode()
        )
        moment = utc(self.clock())
        with self.store.begin() as connection:
            customer_id = self._customer(connection, customer, moment)
            existing = connection.execute(
                select(instances.c.id).where(
                    (instances.c.customer_id == customer_id)
                    & (instances.c.integration_key == integration.key)
                )
            ).scalar()
            values = {
                "integration_name": integration.name,
                "integration_version": integration.version,
                "definition": json.dumps(
                    integration.model_dump(mode="json", by_alias=True, exclude_unset=True)
                ),
                "sources": json.dumps(integration.sources),
                "definition_path": integration.source_path,
                "config": sealed,
                "updated_at": moment,
            }
            if existing is None:
                instance_id = str(uuid.uuid4())
                connection.execute(
                    insert(instances).values(
                        id=instance_id,
                        customer_id=customer_id,
                        integration_key=integration.key,
                        enabled=True,
                        created_at=moment,
                        **values,
                    )
                )
            else:
                instance_id = existing
                connection.execute(
                    update(instances).where(instances.c.id == instance_id).values(**values)
                )
            webhooks = self._sync_webhooks(connection, instance_id, integration, moment)
            self._sync_schedules(connection, instance_id, schedules, moment)
        with self._lock:
            self._loaded.pop(instance_id, None)
            self._endpoints.clear()
        instance = self.get(instance_id)
        assert instance is not None
        return Deployment(
            instance=instance,
            created=existing is None,
            webhooks={flow: webhook_url(self.base_url, token) for flow, token in webhooks.items()},
            schedules={flow: (cron, zone) for flow, (cron, zone, _) in schedules.items()},
        )

    @staticmethod
    def _customer(connection: Connection, name: str, moment: datetime.datetime) -> str:
        """Return the id of the customer called ``name``, creating the customer if new."""
        found = connection.execute(select(customers.c.id).where(customers.c.name == name)).scalar()
        if found is not None:
            return str(found)
        customer_id = str(uuid.uuid4())
        connection.execute(insert(customers).values(id=customer_id, name=name, created_at=moment))
        return customer_id

    @staticmethod
    def _schedules(
        integration: Integration, config: ConfigValues
    ) -> dict[str, tuple[str, str, str]]:
        """Resolve each schedule flow's cron, which may come from a config variable."""
        found: dict[str, tuple[str, str, str]] = {}
        for name, flow in integration.flows.items():
            trigger = flow.trigger
            if not isinstance(trigger, ScheduleTrigger):
                continue
            where = f"flows.{name}.trigger.cron"
            cron = trigger.cron
            # Errors name the config variable the cron comes from, where there is one.
            names = [ref.name for ref in references(cron) if ref.root == "config" and ref.name]
            variable = names[0] if names else where
            used_by = f"the schedule of flow {name!r} ({where})"
            if "{{" in cron:
                try:
                    cron = compile_value(cron, where=where)({"config": config.values})
                except ExpressionError as error:
                    raise ConfigError(
                        f"{used_by} could not be evaluated: {error}",
                        variable=variable,
                        fix="set it to a five-field cron such as '0 6 * * 1-5'",
                    ) from None
                if not isinstance(cron, str):
                    raise ConfigError(
                        f"{cron!r} is not a cron string, as {used_by} needs",
                        variable=variable,
                        fix="set it to a five-field cron such as '0 6 * * 1-5'",
                    )
            try:
                Schedule(cron, trigger.timezone)
            except ScheduleError as error:
                # The ScheduleError's message ends with its own fix.
                raise ConfigError(f"{used_by} is unusable: {error}", variable=variable) from None
            found[name] = (cron, trigger.timezone, trigger.catch_up)
        return found

    @staticmethod
    def _sync_webhooks(
        connection: Connection,
        instance_id: str,
        integration: Integration,
        moment: datetime.datetime,
    ) -> dict[str, str]:
        """Give each webhook flow a token, keeping existing ones; return flow -> token."""
        rows = connection.execute(
            select(webhook_endpoints.c.flow, webhook_endpoints.c.token).where(
                webhook_endpoints.c.instance_id == instance_id
            )
        ).all()
        tokens = {row.flow: row.token for row in rows}
        webhook_flows = [
            name
            for name, flow in integration.flows.items()
            if isinstance(flow.trigger, WebhookTrigger)
        ]
        for flow in set(tokens) - set(webhook_flows):
            connection.execute(
                delete(webhook_endpoints).where(
                    (webhook_endpoints.c.instance_id == instance_id)
                    & (webhook_endpoints.c.flow == flow)
                )
            )
            del tokens[flow]
        for flow in webhook_flows:
            if flow not in tokens:
                token = secrets.token_urlsafe(TOKEN_BYTES)
                connection.execute(
                    insert(webhook_endpoints).values(
                        token=token, instance_id=instance_id, flow=flow, created_at=moment
                    )
                )
                tokens[flow] = token
        return {flow: tokens[flow] for flow in webhook_flows}

    @staticmethod
    def _sync_schedules(
        connection: Connection,
        instance_id: str,
        schedules: Mapping[str, tuple[str, str, str]],
        moment: datetime.datetime,
    ) -> None:
        """Add, update and delete the instance's schedule rows to match ``schedules``."""
        rows = connection.execute(
            select(schedule_states).where(schedule_states.c.instance_id == instance_id)
        ).all()
        current = {row.flow: row for row in rows}
        for flow in set(current) - set(schedules):
            connection.execute(
                delete(schedule_states).where(
                    (schedule_states.c.instance_id == instance_id)
                    & (schedule_states.c.flow == flow)
                )
            )
        for flow, (cron, zone, catch_up) in schedules.items():
            if flow in current:
                connection.execute(
                    update(schedule_states)
                    .where(
                        (schedule_states.c.instance_id == instance_id)
                        & (schedule_states.c.flow == flow)
                    )
                    .values(cron=cron, timezone=zone, catch_up=catch_up)
                )
            else:
                # Fires from the first due time after the deployment, none before it.
                connection.execute(
                    insert(schedule_states).values(
                        instance_id=instance_id,
                        flow=flow,
                        cron=cron,
                        timezone=zone,
                        catch_up=catch_up,
                        last_fired=moment,
                    )
                )

    # -- finding --------------------------------------------------------------------------

    def _select(self) -> Any:
        return select(instances, customers.c.name.label("customer")).join(
            customers, customers.c.id == instances.c.customer_id
        )

    @staticmethod
    def _instance(row: Any) -> Instance:
        return Instance(
            id=row.id,
            customer_id=row.customer_id,
            customer=row.customer,
            integration_key=row.integration_key,
            integration_name=row.integration_name,
            integration_version=row.integration_version,
            definition_path=row.definition_path,
            enabled=bool(row.enabled),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def find(
        self, *, customer: str | None = None, integration: str | None = None
    ) -> list[Instance]:
        """List instances, optionally of one customer or one integration key."""
        query = self._select().order_by(customers.c.name, instances.c.integration_key)
        if customer:
            query = query.where(customers.c.name == customer)
        if integration:
            query = query.where(instances.c.integration_key == integration)
        with self.store.engine.connect() as connection:
            return [self._instance(row) for row in connection.execute(query)]

    def get(self, reference: str) -> Instance | None:
        """Find an instance by id, unique id prefix (6+ characters) or ``customer/integration``."""
        with self.store.engine.connect() as connection:
            if "/" in reference:
                customer, _, key = reference.partition("/")
                query = self._select().where(
                    (customers.c.name == customer) & (instances.c.integration_key == key)
                )
                row = connection.execute(query).first()
                return self._instance(row) if row else None
            row = connection.execute(self._select().where(instances.c.id == reference)).first()
            if row is None and len(reference) >= 6:
                rows = connection.execute(
                    self._select().where(instances.c.id.startswith(reference)).limit(2)
                ).all()
                row = rows[0] if len(rows) == 1 else None
        return self._instance(row) if row else None

    def require(self, reference: str) -> Instance:
        """Find an instance like :meth:`get`, or raise NotFoundError."""
        instance = self.get(reference)
        if instance is None:
            raise NotFoundError(
                f"no instance {reference!r}; give an instance id, a unique prefix of one, or "
                "CUSTOMER/INTEGRATION (see `splice instances list`)"
            )
        return instance

    def set_enabled(self, instance_id: str, enabled: bool) -> None:
        """Enable or disable the instance's webhooks and schedules."""
        with self.store.begin() as connection:
            connection.execute(
                update(instances)
                .where(instances.c.id == instance_id)
                .values(enabled=enabled, updated_at=utc(self.clock()))
            )
        # Dropped after the commit, so that a load racing the update cannot cache the old
        # state again. This process reads the change at once, others within CACHE_SECONDS.
        with self._lock:
            self._loaded.pop(instance_id, None)

    def webhooks(self, instance_id: str) -> dict[str, str]:
        """Return the URL of each webhook flow of the instance, by flow name."""
        query = select(webhook_endpoints.c.flow, webhook_endpoints.c.token).where(
            webhook_endpoints.c.instance_id == instance_id
        )
        with self.store.engine.connect() as connection:
            rows = connection.execute(query.order_by(webhook_endpoints.c.flow)).all()
        return {row.flow: webhook_url(self.base_url, row.token) for row in rows}

    def schedules(self, instance_id: str) -> list[dict[str, Any]]:
        """Return the schedule state rows of the instance, one dict per schedule flow."""
        query = select(schedule_states).where(schedule_states.c.instance_id == instance_id)
        with self.store.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def endpoint(self, token: str) -> Endpoint | None:
        """Look up the webhook with ``token``, cached for CACHE_SECONDS; None if unknown."""
        moment = time.monotonic()
        with self._lock:
            cached = self._endpoints.get(token)
        if cached is not None and moment - cached[0] < CACHE_SECONDS:
            return cached[1]
        query = select(webhook_endpoints.c.instance_id, webhook_endpoints.c.flow).where(
            webhook_endpoints.c.token == token
        )
        with self.store.engine.connect() as connection:
            row = connection.execute(query).first()
        found = Endpoint(token, row.instance_id, row.flow) if row else None
        with self._lock:
            if len(self._endpoints) > 10_000:
                self._endpoints.clear()
            self._endpoints[token] = (moment, found)
        return found

    def load(self, instance_id: str) -> LoadedInstance:
        """Load the instance with its integration and unsealed config.

        The result is cached, and after CACHE_SECONDS the record's updated_at is checked
        again, so a redeploy takes effect. Each call returns its own copy of the config.
        """
        moment = time.monotonic()
        with self._lock:
            recent = self._loaded.get(instance_id)
        if recent is not None and moment - recent[0] < CACHE_SECONDS:
            cached = recent[1]
            return LoadedInstance(cached.instance, cached.integration, _copy(cached.config))
        with self.store.engine.connect() as connection:
            row = connection.execute(self._select().where(instances.c.id == instance_id)).first()
        if row is None:
            raise NotFoundError(f"no instance {instance_id!r}; it may have been deleted")
        instance = self._instance(row)
        if recent is not None and recent[1].instance.updated_at == instance.updated_at:
            cached = LoadedInstance(instance, recent[1].integration, recent[1].config)
            with self._lock:
                self._loaded[instance_id] = (moment, cached)
            return LoadedInstance(instance, cached.integration, _copy(cached.config))
        integration = Integration.model_validate(json.loads(row.definition))
        integration._source_path = row.definition_path
        integration._sources = json.loads(row.sources)
        sealed = json.loads(
            self.sealer.unseal(row.config, what=f"the config of instance {instance_id}")
        )
        loaded = LoadedInstance(
            instance, integration, ConfigValues(sealed["values"], sealed["secrets"])
        )
        with self._lock:
            self._loaded[instance_id] = (moment, loaded)
        return LoadedInstance(instance, integration, _copy(loaded.config))


def _copy(config: ConfigValues) -> ConfigValues:
    """Copy the config for one execution, because the supervisor rewrites granted folders."""
    return ConfigValues(dict(config.values), list(config.secrets))
