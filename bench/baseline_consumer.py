"""A seed-style consumer: one question at a time, no concurrency (the system qastream replaces).

Each loop: consume one question from a Kafka partition with aiokafka, call
the LLM with the ``ollama`` client, score the answer with BERTScore (the
same packaged model and loader qastream uses), store it with SQLAlchemy,
produce the result, commit.  ``bench/capacity.py`` runs two of these, each
assigned one partition, as the seed ran two sequential LLM consumers.

    python bench/baseline_consumer.py --bootstrap H:P --topic T --partition 0 --results R \
        --ollama-url URL --database-url URL
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ollama  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from qastream.services.llm import SYSTEM_PROMPT  # noqa: E402
from qastream.services.scorer import load_scorer  # noqa: E402

SCHEMA = ("CREATE TABLE IF NOT EXISTS baseline_responses (question_id TEXT PRIMARY KEY, question_text TEXT, "
          "answer TEXT, bert_score REAL, consumer INTEGER, stored_at REAL)")


async def run(args: argparse.Namespace) -> None:
    scorer = load_scorer("", 6, args.threads)
    engine = create_engine(args.database_url, connect_args={"timeout": 30} if args.database_url.startswith(
        "sqlite") else {})
    with engine.begin() as connection:
        connection.execute(text(SCHEMA))
    llm = ollama.AsyncClient(host=args.ollama_url, timeout=120)
    consumer = AIOKafkaConsumer(bootstrap_servers=args.bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", group_id=args.group, max_poll_records=1)
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap)
    await consumer.start()
    await producer.start()
    consumer.assign([TopicPartition(args.topic, args.partition)])
    print("ready", flush=True)
    try:
        while True:
            message = await consumer.getone()
            question = json.loads(message.value)
            response = await llm.chat(model=args.model, stream=False, messages=[
                {"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question["question_text"]}],
                options={"num_predict": 160, "temperature": 0.3})
            answer = response.message.content or ""
            _, _, f1 = scorer.score([answer], [question["original_answer"]])
            score = float(f1[0])
            with engine.begin() as connection:
                connection.execute(text(
                    "INSERT INTO baseline_responses VALUES (:qid, :q, :a, :s, :c, :t) "
                    "ON CONFLICT (question_id) DO UPDATE SET answer = excluded.answer, bert_score = excluded.bert_score, "
                    "stored_at = excluded.stored_at"),
                    {"qid": question["question_id"], "q": question["question_text"], "a": answer, "s": score,
                     "c": args.partition, "t": time.time()})
            await producer.send_and_wait(args.results, json.dumps({**question, "answer": answer,
                                                                   "score": score}).encode(),
                                         key=message.key)
            await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partition", type=int, required=True)
    parser.add_argument("--results", required=True)
    parser.add_argument("--group", default="baseline")
    parser.add_argument("--ollama-url", required=True)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (two consumers share the cores)")
    try:
        asyncio.run(run(parser.parse_args()))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
