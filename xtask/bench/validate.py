"""Validates a card file the way a typical integrator would: the csv module, a Luhn loop,
prefix checks, an expiry check, duplicate ids. Prints one line per invalid row and a summary.

Usage: python3 validate.py cards.csv
"""
import csv
import sys


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


def brand(number):
    if number.startswith("4"):
        return "visa"
    if number[:2] in ("51", "52", "53", "54", "55") or 2221 <= int(number[:4]) <= 2720:
        return "mastercard"
    if number.startswith("6011") or number.startswith("65") or number[:3] in ("644", "645", "646", "647", "648", "649"):
        return "discover"
    if number[:2] in ("34", "37"):
        return "american_express"
    return None


def exp_ok(exp):
    parts = exp.split("/")
    if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit():
        return False
    return 1 <= int(parts[0]) <= 12 and len(parts[1]) in (2, 4)


def main():
    valid = invalid = 0
    seen = set()
    with open(sys.argv[1], newline="") as f:
        for row_number, row in enumerate(csv.DictReader(f), start=1):
            card = row["card"].strip()
            errors = []
            if not card.isdigit() or not 12 <= len(card) <= 19:
                errors.append("format")
            elif not luhn_ok(card):
                errors.append("luhn")
            elif brand(card) is None:
                errors.append("unsupported_brand")
            if not exp_ok(row["exp"].strip()):
                errors.append("exp")
            if row["id"] in seen:
                errors.append("duplicate_id")
            seen.add(row["id"])
            if errors:
                invalid += 1
                print(f"{row_number} {row['id']} {card[:6]}******{card[-4:]} {','.join(errors)}")
            else:
                valid += 1
    print(f"{valid} valid, {invalid} invalid")
    sys.exit(1 if invalid else 0)


if __name__ == "__main__":
    main()
