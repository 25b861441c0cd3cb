"""The Airflow UI plugin: an "OpenAI Batches" page and a task-instance view of the batches Airflow created.

``openai_batches`` registers it; ``app`` serves it; ``batch_listing`` reads the batches from the
OpenAI API, ``airflow_records`` reads what Airflow itself recorded, ``page`` renders HTML.
"""
