"""The software-defined assets, one module per stage: ingest -> clean -> aggregate/sessions/export."""

from hipages_pipeline.assets.clean import clean_events_asset, hourly_activity
from hipages_pipeline.assets.exports import event_table_csv, hourly_activity_csv
from hipages_pipeline.assets.ingest import ingest_events, rejected_without_hour
from hipages_pipeline.assets.sessions import user_sessions, user_sessions_csv

ALL_ASSETS = [ingest_events, rejected_without_hour, clean_events_asset, hourly_activity,
              event_table_csv, hourly_activity_csv, user_sessions, user_sessions_csv]
