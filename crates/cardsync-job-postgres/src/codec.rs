//! The plain form of what the journal seals: a request's cards, and a request's result rows,
//! each as one value (so that a request costs one row and one seal, not ten thousand). Every
//! field is a length (4 bytes, big-endian; `u32::MAX` for none) and its bytes.

use cardsync_core::{Expiry, Pan, SeNumber, UpdateStatus};
use cardsync_job::{ResultRow, StoredCard};
use cardsync_proto::ReturnedCard;
use zeroize::Zeroizing;

const NONE: u32 = u32::MAX;

fn put(out: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        Some(bytes) => {
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        None => out.extend_from_slice(&NONE.to_be_bytes()),
    }
}

/// Reads fields back; `None` at the end or on a damaged value.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn next(&mut self) -> Result<Option<&'a [u8]>, String> {
        let (len, rest) = self
            .0
            .split_first_chunk::<4>()
            .ok_or("a sealed value is cut short")?;
        let len = u32::from_be_bytes(*len);
        if len == NONE {
            self.0 = rest;
            return Ok(None);
        }
        let len = len as usize;
        if rest.len() < len {
            return Err("a sealed value is cut short".into());
        }
        let (field, rest) = rest.split_at(len);
        self.0 = rest;
        Ok(Some(field))
    }

    fn text(&mut self) -> Result<Option<&'a str>, String> {
        self.next()?
            .map(|b| std::str::from_utf8(b).map_err(|_| "a sealed field is not text".to_owned()))
            .transpose()
    }

    fn required(&mut self) -> Result<&'a str, String> {
        self.text()?
            .ok_or_else(|| "a sealed field is missing".to_owned())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A request's cards, in their plain form (zeroed when dropped).
pub(crate) fn encode_cards(cards: &[StoredCard]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(cards.len() * 48));
    for c in cards {
        put(&mut out, Some(c.row.to_string().as_bytes()));
        put(&mut out, Some(c.id.as_bytes()));
        put(&mut out, Some(c.pan.expose().as_str().as_bytes()));
        put(&mut out, Some(c.exp.to_string().as_bytes()));
        put(
            &mut out,
            c.se_number.as_ref().map(|s| s.as_str().as_bytes()),
        );
    }
    out
}

/// A request's cards back from their plain form.
pub(crate) fn decode_cards(plain: &[u8]) -> Result<Vec<StoredCard>, String> {
    let mut fields = Fields(plain);
    let mut cards = Vec::new();
    while !fields.is_empty() {
        let row: u64 = fields
            .required()?
            .parse()
            .map_err(|_| "a sealed row number is not a number")?;
        let id = fields.required()?.to_owned();
        let pan = Pan::parse(fields.required()?)
            .map_err(|_| format!("row {row}: a sealed card is not a card number"))?;
        let exp =
            Expiry::parse(fields.required()?).map_err(|_| format!("row {row}: a bad expiry"))?;
        let se = match fields.text()? {
            Some(s) => Some(SeNumber::parse(s).map_err(|_| format!("row {row}: a bad SE number"))?),
            None => None,
        };
        cards.push(StoredCard::new(row, id, pan, exp, se));
    }
    Ok(cards)
}

/// A request's result rows, in their plain form (zeroed when dropped).
pub(crate) fn encode_rows(rows: &[ResultRow]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(rows.len() * 96));
    for r in rows {
        put(&mut out, Some(r.id.as_bytes()));
        put(&mut out, r.status.as_ref().map(|s| s.as_str().as_bytes()));
        put(&mut out, Some(r.card.expose().as_bytes()));
        put(&mut out, r.exp.as_deref().map(str::as_bytes));
        put(&mut out, r.se_number.as_deref().map(str::as_bytes));
        put(&mut out, r.batch_id.as_deref().map(str::as_bytes));
        put(&mut out, r.event_id.as_deref().map(str::as_bytes));
        put(&mut out, r.old_last4.as_deref().map(str::as_bytes));
    }
    out
}

/// A request's result rows back from their plain form.
pub(crate) fn decode_rows(plain: &[u8]) -> Result<Vec<ResultRow>, String> {
    let mut fields = Fields(plain);
    let mut rows = Vec::new();
    while !fields.is_empty() {
        let id = fields.required()?.to_owned();
        let status = fields.text()?.map(UpdateStatus::parse);
        let card = ReturnedCard::new(fields.required()?);
        let mut row = ResultRow::new(id, status, card);
        row.exp = fields.text()?.map(str::to_owned);
        row.se_number = fields.text()?.map(str::to_owned);
        row.batch_id = fields.text()?.map(str::to_owned);
        row.event_id = fields.text()?.map(str::to_owned);
        row.old_last4 = fields.text()?.map(str::to_owned);
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cards_and_rows_come_back_as_they_went() {
        let se = SeNumber::parse("1234567890").unwrap();
        let cards = vec![
            StoredCard::new(
                7,
                "a\tb\nc",
                Pan::parse("4111111111111111").unwrap(),
                Expiry::parse("12/29").unwrap(),
                None,
            ),
            StoredCard::new(
                9,
                "",
                Pan::parse("342132335566772").unwrap(),
                Expiry::parse("01/50").unwrap(),
                Some(se),
            ),
        ];
        let back = decode_cards(&encode_cards(&cards)).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!((back[0].row, back[0].id.as_str()), (7, "a\tb\nc"));
        assert_eq!(back[1].pan.expose().as_str(), "342132335566772");
        assert_eq!(
            back[1].se_number.as_ref().map(|s| s.as_str()),
            Some("1234567890")
        );

        let mut row = ResultRow::new(
            "x",
            Some(UpdateStatus::UpdatedCard),
            ReturnedCard::new("4111111111111111"),
        );
        row.exp = Some("12/32".into());
        row.old_last4 = Some("1111".into());
        let rows = vec![row, ResultRow::new("y", None, ReturnedCard::new(""))];
        let back = decode_rows(&encode_rows(&rows)).unwrap();
        assert_eq!(back, rows);
        assert!(decode_rows(&[0, 0, 0, 9, b'x']).is_err());
        assert!(decode_cards(&[0, 0]).is_err());
        assert!(decode_rows(&[]).unwrap().is_empty());
    }
}
