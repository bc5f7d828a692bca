"""Settings read from the environment, one class per way of running the product.

Nothing here touches the disk or the network: values are read when a config
object is built, so a test or a job can build an app against the database it
chooses.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
INSTANCE_DIR = PROJECT_ROOT / "instance"


def default_database_url() -> str:
    """Return the embedded default: a SQLite file under ``instance/``."""
    return f"sqlite:///{INSTANCE_DIR / 'activity-ops.sqlite3'}"


def normalise_database_url(url: str) -> str:
    """Make a plain ``postgresql://`` URL use psycopg 3, the driver we ship."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


class BaseConfig:
    """Settings shared by every environment."""

    ENV_NAME = "base"

    def __init__(self) -> None:
        self.SECRET_KEY = os.environ.get("SECRET_KEY")
        self.SQLALCHEMY_DATABASE_URI = normalise_database_url(
            os.environ.get("DATABASE_URL") or default_database_url()
        )
        # No pool_pre_ping: a round trip before every transaction. Connections idle
        # long enough to have been dropped are pinged instead (webapp.database).
        self.SQLALCHEMY_ENGINE_OPTIONS: dict = {}
        self.SQLALCHEMY_TRACK_MODIFICATIONS = False
        # Alerts: a Slack/Discord-compatible webhook and/or email over SMTP.
        self.ALERT_WEBHOOK_URL = os.environ.get("ALERT_WEBHOOK_URL")
        self.ALERT_EMAIL_TO = os.environ.get("ALERT_EMAIL_TO", "")
        self.SMTP_HOST = os.environ.get("SMTP_HOST", "localhost")
        self.SMTP_PORT = int(os.environ.get("SMTP_PORT", "25"))
        self.SMTP_FROM = os.environ.get("SMTP_FROM", "activity-ops@localhost")
        self.ALERT_MAX_ATTEMPTS = int(os.environ.get("ALERT_MAX_ATTEMPTS", "5"))
        self.ALERT_QUIET_MINUTES = int(os.environ.get("ALERT_QUIET_MINUTES", "15"))
        # Drift above this share of players is worth an alert; so is this many events a minute.
        self.DRIFT_ALERT_SHARE = float(os.environ.get("DRIFT_ALERT_SHARE", "0.01"))
        self.EVENT_RATE_ALERT_PER_MINUTE = int(os.environ.get("EVENT_RATE_ALERT_PER_MINUTE", "1000"))
        self.RECONCILE_FIX_BATCH_SIZE = int(os.environ.get("RECONCILE_FIX_BATCH_SIZE", "500"))
        # Anomalies: a type's live events in the last hour below this fraction of its
        # usual hour (the mean of the same hour over the previous days), once the usual
        # hour holds enough events not to flap; and drift found by this many runs in a row.
        self.VOLUME_DROP_FRACTION = float(os.environ.get("VOLUME_DROP_FRACTION", "0.2"))
        self.VOLUME_DROP_MIN_USUAL_PER_HOUR = int(os.environ.get("VOLUME_DROP_MIN_USUAL_PER_HOUR", "30"))
        self.VOLUME_DROP_BASELINE_DAYS = int(os.environ.get("VOLUME_DROP_BASELINE_DAYS", "7"))
        self.DRIFT_PERSISTENT_RUNS = int(os.environ.get("DRIFT_PERSISTENT_RUNS", "3"))

        # Prometheus scrapes /metrics with this bearer token or from these CIDRs
        # (comma-separated); with neither set the endpoint does not exist (404).
        self.METRICS_TOKEN = os.environ.get("METRICS_TOKEN") or None
        self.METRICS_ALLOW_FROM = os.environ.get("METRICS_ALLOW_FROM", "")
        # Set for every process of a multi-process server (gunicorn workers, consumers
        # on the same host): each writes its counters there and a scrape sums them.
        self.PROMETHEUS_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None

        # Staff sessions: signed cookies that expire after this long without a request.
        idle_minutes = int(os.environ.get("STAFF_IDLE_TIMEOUT_MINUTES", "30"))
        self.PERMANENT_SESSION_LIFETIME = timedelta(minutes=idle_minutes)
        self.SESSION_REFRESH_EACH_REQUEST = True
        self.SESSION_COOKIE_HTTPONLY = True
        self.SESSION_COOKIE_SAMESITE = "Lax"
        self.SESSION_COOKIE_SECURE = False
        self.REMEMBER_COOKIE_HTTPONLY = True
        self.REMEMBER_COOKIE_SAMESITE = "Lax"
        self.WTF_CSRF_TIME_LIMIT = None  # the token lives as long as the session

        # Sign-in attempts per client address; memory storage unless a Redis URL is given.
        self.RATELIMIT_STORAGE_URI = os.environ.get("RATELIMIT_STORAGE_URI", "memory://")
        self.LOGIN_RATE_LIMIT = os.environ.get("LOGIN_RATE_LIMIT", "10 per minute;50 per hour")
        self.RATELIMIT_HEADERS_ENABLED = True

        # The job queue: a SQLite file by default, Redis when QUEUE_URL=redis://...
        self.QUEUE_URL = os.environ.get("QUEUE_URL") or f"sqlite:///{INSTANCE_DIR / 'queue.sqlite3'}"
        self.QUEUE_NAME = os.environ.get("QUEUE_NAME", "activity-ops")
        # A running job whose worker sent no heartbeat for this long is failed (and resumable).
        self.JOB_STALE_AFTER_SECONDS = int(os.environ.get("JOB_STALE_AFTER_SECONDS", "300"))
        # Nightly reconciliation, HH:MM in UTC; it repairs what it finds unless told not to.
        self.RECONCILE_AT = os.environ.get("RECONCILE_AT", "03:00")
        self.RECONCILE_NIGHTLY_FIX = os.environ.get("RECONCILE_NIGHTLY_FIX", "true").lower() == "true"

        # Backfill: source records per batch (one transaction each) and the pause
        # between batches; it refuses to start inside the peak window (HH:MM-HH:MM
        # UTC, "off" for none) unless forced, and above this many requests/s.
        self.BACKFILL_BATCH_SIZE = int(os.environ.get("BACKFILL_BATCH_SIZE", "500"))
        self.BACKFILL_PAUSE_SECONDS = float(os.environ.get("BACKFILL_PAUSE_SECONDS", "0.05"))
        self.BACKFILL_PEAK_WINDOW = os.environ.get("BACKFILL_PEAK_WINDOW", "06:00-23:59")
        self.BACKFILL_MAX_REQUEST_RATE = float(os.environ.get("BACKFILL_MAX_REQUEST_RATE", "50"))
        # A backfill with at least this many records left to read has its batches
        # prepared by a process of its own ("off": never); below it, starting
        # that process costs more than it saves.
        preparation = os.environ.get("BACKFILL_PREPARATION_PROCESS_FROM", "20000")
        self.BACKFILL_PREPARATION_PROCESS_FROM = None if preparation == "off" else int(preparation)
        # How that process starts: "auto" forks a worker with no other thread and
        # starts a new interpreter otherwise; "fork" or "interpreter" always.
        self.BACKFILL_PREPARATION_START = os.environ.get("BACKFILL_PREPARATION_START", "auto")

        # Archival: events older than this many days move to gzip JSON-lines files
        # under ARCHIVE_URL, a folder or any fsspec URL (s3://... with its package).
        self.ARCHIVE_URL = os.environ.get("ARCHIVE_URL") or str(INSTANCE_DIR / "archive")
        self.ARCHIVE_AFTER_DAYS = int(os.environ.get("ARCHIVE_AFTER_DAYS", "730"))

        # GDPR exports: files written under GDPR_EXPORT_URL (a folder or any fsspec
        # URL), offered through signed links that expire after this many seconds.
        self.GDPR_EXPORT_URL = os.environ.get("GDPR_EXPORT_URL") or str(INSTANCE_DIR / "gdpr-exports")
        self.GDPR_EXPORT_LINK_MAX_AGE_SECONDS = int(
            os.environ.get("GDPR_EXPORT_LINK_MAX_AGE_SECONDS", "3600")
        )
        # The event table is due for archival above this size (bytes, default 20 GiB).
        self.EVENT_TABLE_ALERT_BYTES = int(os.environ.get("EVENT_TABLE_ALERT_BYTES", str(20 * 1024**3)))
        # Each process adds its operation latency histograms to the monitoring rollups this often.
        self.LATENCY_FLUSH_SECONDS = float(os.environ.get("LATENCY_FLUSH_SECONDS", "5"))

    def validate(self) -> None:
        """Refuse to start with settings that are unsafe for this environment."""
        if not self.SECRET_KEY:
            raise RuntimeError(
                "SECRET_KEY is not set. Set it in the environment; only development "
                "and tests may run without one."
            )


class DevelopmentConfig(BaseConfig):
    """Local use on the embedded SQLite database."""

    ENV_NAME = "development"

    def __init__(self) -> None:
        super().__init__()
        # A per-process random key is fine on a laptop: sessions simply end on restart.
        self.SECRET_KEY = self.SECRET_KEY or os.urandom(32).hex()


class TestConfig(BaseConfig):
    """The test suite: the database URL is always given explicitly by the fixtures."""

    ENV_NAME = "test"
    TESTING = True

    def __init__(self) -> None:
        super().__init__()
        self.SECRET_KEY = "test-secret-key"
        # Staff passwords in tests are hashed with argon2's cheapest parameters.
        self.PASSWORD_HASH_PROFILE = "CHEAPEST"
        # Latency counts are flushed by the tests themselves: a background flush
        # could outlive a test's database.
        self.LATENCY_FLUSH_SECONDS = 24 * 3600


class ProductionConfig(BaseConfig):
    """A deployed instance, normally on PostgreSQL, served over HTTPS."""

    ENV_NAME = "production"

    def __init__(self) -> None:
        super().__init__()
        self.SESSION_COOKIE_SECURE = True
        self.REMEMBER_COOKIE_SECURE = True
        self.PREFERRED_URL_SCHEME = "https"


CONFIGS = {
    "development": DevelopmentConfig,
    "test": TestConfig,
    "production": ProductionConfig,
}


def config_from_env() -> BaseConfig:
    """Build the config named by ``ACTIVITY_OPS_ENV`` (development by default)."""
    name = os.environ.get("ACTIVITY_OPS_ENV", "development")
    try:
        return CONFIGS[name]()
    except KeyError:
        raise RuntimeError(
            f"ACTIVITY_OPS_ENV={name!r} is not one of {', '.join(sorted(CONFIGS))}"
        ) from None
