//! The cells the CRM writes: fresh values, known values written again (now and then dressed
//! up), full rows and rows that break a local rule, each account drawing from its own RNG.

const FIRST: [&str; 8] = [
    "Ann", "Zoë", "Émile", "Bo", "Łucja", "O'Neil", "Jean-Luc", "Ånund",
];
const LAST: [&str; 4] = ["van der Berg", "McKay", "Ødegård", "Smith, Jr"];
const STREETS: [&str; 4] = [
    "Elm Street",
    "Mühlenweg",
    "Birch Road, Upper",
    "Quai d'Orsay",
];
const CITIES: [&str; 6] = ["Leeds", "Köln", "São Paulo", "Ghent", "Oslo", "St. Ives"];

/// A new value for `field`, as the CRM would write it. E-mails carry the reference, so no
/// two accounts ever ask for the same one (the API answers 409 to that).
pub(crate) fn fresh(
    rng: &mut fastrand::Rng,
    reference: &str,
    export: usize,
    field: usize,
) -> String {
    match field {
        0 => {
            let local = format!("{}.e{export}.{}", reference.to_lowercase(), rng.u32(..1000));
            match rng.bool() {
                true => format!("{local}@Example.COM"),
                false => format!("{local}@example.com"),
            }
        }
        1 => FIRST[rng.usize(..FIRST.len())].to_owned(),
        2 => format!("{} {}", LAST[rng.usize(..LAST.len())], rng.u32(..1000)),
        3 => format!(
            "{} {}",
            rng.u32(1..400),
            STREETS[rng.usize(..STREETS.len())]
        ),
        4 => CITIES[rng.usize(..CITIES.len())].to_owned(),
        _ => format!("P{:04}", rng.u32(..10_000)),
    }
}

/// A known value written again, now and then with white space around it or (an e-mail) in
/// capitals: the same value after normalizing. `cosmetic` notes that it was dressed up.
pub(crate) fn again(
    rng: &mut fastrand::Rng,
    field: usize,
    value: &Option<String>,
    cosmetic: &mut bool,
) -> String {
    let Some(v) = value else {
        return String::new();
    };
    match rng.u32(..100) {
        0..=2 => {
            *cosmetic = true;
            format!(" {v}\t")
        }
        3..=5 if field == 0 => {
            *cosmetic = true;
            v.to_uppercase()
        }
        _ => v.clone(),
    }
}

pub(crate) fn full_row(rng: &mut fastrand::Rng, reference: &str, export: usize) -> [String; 7] {
    let mut row: [String; 7] = Default::default();
    row[0] = reference.to_owned();
    for field in 0..6 {
        row[field + 1] = fresh(rng, reference, export, field);
    }
    row
}

/// A full row that breaks one local rule.
pub(crate) fn broken_row(rng: &mut fastrand::Rng, reference: &str, export: usize) -> [String; 7] {
    let mut row = full_row(rng, reference, export);
    match rng.bool() {
        true => row[1] = format!("{}-at-example.com", reference.to_lowercase()),
        false => row[2] = "X".repeat(51), // firstname longer than 50 characters
    }
    row
}

/// Every account's draws come from its own RNG, so the exports depend on the seed alone and
/// one account's rows never shift another's.
pub(crate) fn account_rng(seed: u64, export: usize, index: usize) -> fastrand::Rng {
    fastrand::Rng::with_seed(
        seed ^ (export as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((index as u64) << 20),
    )
}
