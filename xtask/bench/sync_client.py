"""An account-updater client written the way the CardSync documents' Python samples are:
requests + json. Reads a card file, sends batches of 10,000, polls each batch until it is
complete, fetches its results and writes them to a CSV file.

Usage: CARDSYNC_BASE_URL=... CARDSYNC_API_KEY=... python3 sync_client.py cards.csv out.csv
"""
import csv
import json
import os
import sys
import time

import requests

BASE_URL = os.environ["CARDSYNC_BASE_URL"].rstrip("/")
HEADERS = {"Authorization": os.environ["CARDSYNC_API_KEY"], "Content-Type": "application/json"}


def luhn_ok(number):
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def main():
    cards = []
    with open(sys.argv[1], newline="") as f:
        for row in csv.DictReader(f):
            if row["card"].isdigit() and luhn_ok(row["card"]):
                cards.append({"id": row["id"], "card": row["card"], "exp": row["exp"]})

    batch_ids = []
    for start in range(0, len(cards), 10000):
        payload = {"cards": cards[start:start + 10000]}
        response = requests.post(BASE_URL + "/v2/batch", headers=HEADERS, data=json.dumps(payload))
        response.raise_for_status()
        batch_ids.append(response.json()["data"]["batch_id"])

    with open(sys.argv[2], "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "status", "card", "exp", "se_number", "batch_id", "event_id"])
        for batch_id in batch_ids:
            delay = 0.05
            while True:
                response = requests.get(BASE_URL + "/v2/batch", headers=HEADERS, params={"batch_id": batch_id})
                response.raise_for_status()
                if response.json()["data"]["status"] == "completed":
                    break
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
            response = requests.get(BASE_URL + "/v2/batch/results", headers=HEADERS, params={"batch_id": batch_id})
            response.raise_for_status()
            for card in response.json()["data"]["cards"]:
                writer.writerow([card["id"], card.get("status"), card["card"], card.get("exp"),
                                 card.get("se_number") or "", batch_id, ""])


if __name__ == "__main__":
    main()
