"""Pair logins with logouts into ``type: session`` documents (sshd by host + PID, OpenVPN by host +
user + real address, Teleport by session id).

    store = RedisSessionStore(redis_client, config)      # or MemorySessionStore(config)
    pairer = SessionPairer(store, clock=...)
    for doc_id, doc in pairer.process_batch(parsed_docs) + pairer.expire():
        IndexAction(index=index_for(doc["@timestamp"], prefix), id=doc_id, doc=doc)  # ingest.sinks.elasticsearch

Modules: ``config`` (SessionConfig), ``events`` (which document plays which part),
``state`` (pure transitions), ``store`` (memory / Redis), ``doc`` (the session document),
``pairer`` (the stage).
"""

from ingest.sessions.config import SessionConfig
from ingest.sessions.doc import SESSION_ACTION, session_id
from ingest.sessions.pairer import SessionDoc, SessionPairer, utc_now
from ingest.sessions.store import MemorySessionStore, RedisSessionStore, SessionStore, SessionStoreUnavailable

__all__ = [
    "SESSION_ACTION",
    "MemorySessionStore",
    "RedisSessionStore",
    "SessionConfig",
    "SessionDoc",
    "SessionPairer",
    "SessionStore",
    "SessionStoreUnavailable",
    "session_id",
    "utc_now",
]
