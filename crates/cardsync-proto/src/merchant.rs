//! The merchant enrollment request body (`POST /v2/merchant`), field for field as documented.

use serde::{Deserialize, Deserializer, Serialize};

/// An int32 count written as any JSON number with no fractional part (`3` or `3.0`), as JSON
/// Schema's `integer` allows.
fn int32<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    let n = f64::deserialize(d)?;
    if n.fract() == 0.0 && n >= f64::from(i32::MIN) && n <= f64::from(i32::MAX) {
        Ok(n as i32)
    } else {
        Err(serde::de::Error::custom(
            "expected a whole number within int32",
        ))
    }
}

/// A merchant to enroll. Every field is documented as required except `phone_ext`.
///
/// Deserializing (from a file an operator wrote) rejects unknown fields, so that a misspelt
/// field is reported instead of silently dropped.
///
/// ```
/// let json = include_str!("../tests/data/universal/merchant_enroll_request.json");
/// let merchant: cardsync_proto::MerchantEnrollment = serde_json::from_str(json)?;
/// assert_eq!(merchant.user.username, "somerandomuser20210219c");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MerchantEnrollment {
    /// The legal business name; unique across CardSync.
    pub legal_business_name: String,
    /// The trading name.
    pub name: String,
    /// A description.
    pub description: String,
    /// The website.
    pub website: String,
    /// The phone number.
    pub phone: String,
    /// The phone extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_ext: Option<String>,
    /// Where receipts go.
    pub receipt_email: String,
    /// The time zone, such as `UTC`.
    pub timezone: String,
    /// The fee schedule CardSync gave the partner.
    pub fee_schedule_id: String,
    /// The merchant's main contact.
    pub primary_contact: PrimaryContact,
    /// The merchant's first user.
    pub user: MerchantUser,
    /// What the merchant will submit.
    pub card_info: CardInfo,
}

/// A merchant's main contact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PrimaryContact {
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Company.
    pub company: String,
    /// First address line.
    pub address_line_1: String,
    /// Second address line (may be empty).
    pub address_line_2: String,
    /// City.
    pub city: String,
    /// State or region.
    pub state: String,
    /// Postal code.
    pub postal_code: String,
    /// Country code, such as `US`.
    pub country: String,
    /// Phone number.
    pub phone: String,
    /// Email address.
    pub email: String,
}

/// A merchant's first user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MerchantUser {
    /// The user name; unique across CardSync.
    pub username: String,
    /// The user's email.
    pub email: String,
    /// The user's status, such as `active`.
    pub status: String,
    /// The user's role, such as `admin`.
    pub role: String,
    /// Whether enrollment returns an API key for the merchant.
    pub create_api_key: bool,
}

/// What a merchant will submit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CardInfo {
    /// The kind of biller, such as `both`.
    pub type_of_biller: String,
    /// Cards in all.
    #[serde(deserialize_with = "int32")]
    pub total_number_of_records: i32,
    /// Visa cards.
    #[serde(deserialize_with = "int32")]
    pub number_of_visa: i32,
    /// Mastercard cards.
    #[serde(deserialize_with = "int32")]
    pub number_of_mastercard: i32,
    /// Discover cards.
    #[serde(deserialize_with = "int32")]
    pub number_of_discover: i32,
    /// American Express cards.
    #[serde(deserialize_with = "int32")]
    pub number_of_amex: i32,
    /// The American Express SE number, for merchants with Amex cards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amex_se_number: Option<String>,
    /// `daily`, `weekly` or `monthly`.
    pub delivery_frequency: String,
    /// The merchant category code.
    pub mcc: String,
}
