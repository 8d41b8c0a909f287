"""Stage 1, data: export files -> Message -> Conversation -> Sample.

`sources/` holds one parser per export format (each yields `records.Message`), `parse` runs them,
`filters` and `scrub` clean messages, `chat_order` puts a chat's messages in time order, `conversations`
groups them into `records.Conversation`, `samples` cuts those into `records.Sample`s, and `prepare` runs
the whole stage into a data folder (`prepared`: train.jsonl, eval.jsonl, report.json, lengths.png).
"""
