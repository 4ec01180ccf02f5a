//! The synthetic CRM export: the demo's 27 columns, varied but valid values, streamed to
//! disk so the generator stays a few MB whatever the row count.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::Path;

use crate::BenchResult;

/// The sample export's header order: every column `config/demo.toml` maps, plus the two it
/// leaves unmapped (Owner, Last Modified).
pub(crate) const HEADER: [&str; 27] = [
    "Account Reference",
    "Owner",
    "Status",
    "Verified",
    "Email",
    "Client User ID",
    "Salutation",
    "First Name",
    "Last Name",
    "Phone",
    "Mobile",
    "Date of Birth",
    "Gender",
    "Marketing Opt-In",
    "House Name",
    "House Number",
    "Street",
    "City",
    "District",
    "State",
    "County",
    "Postcode",
    "Country",
    "Loyalty Tier",
    "Preferred Store",
    "Referral Code",
    "Last Modified",
];

/// (as written, ASCII form for the e-mail address)
pub(crate) const FIRST_NAMES: &[(&str, &str)] = &[
    ("James", "james"),
    ("Olivia", "olivia"),
    ("José", "jose"),
    ("Zoë", "zoe"),
    ("Siobhán", "siobhan"),
    ("Łukasz", "lukasz"),
    ("Amelia", "amelia"),
    ("Mohammed", "mohammed"),
    ("Priya", "priya"),
    ("Chen", "chen"),
    ("Noah", "noah"),
    ("Isla", "isla"),
    ("Oliver", "oliver"),
    ("Aisha", "aisha"),
    ("Jack", "jack"),
    ("Emily", "emily"),
];
pub(crate) const LAST_NAMES: &[(&str, &str)] = &[
    ("Smith", "smith"),
    ("García", "garcia"),
    ("Jones", "jones"),
    ("O'Brien", "obrien"),
    ("Williams", "williams"),
    ("Müller", "mueller"),
    ("Patel", "patel"),
    ("Taylor", "taylor"),
    ("Nowak", "nowak"),
    ("Brown", "brown"),
    ("Evans", "evans"),
    ("Wilson", "wilson"),
    ("Khan", "khan"),
    ("Davies", "davies"),
];
pub(crate) const DOMAINS: &[&str] = &[
    "example.com",
    "example.org",
    "Example.COM",
    "mail.example.net",
];
pub(crate) const OWNERS: &[&str] = &["j.hartley", "s.lindqvist", "m.okafor", "a.novak", "r.silva"];
pub(crate) const STATUSES: &[&str] = &[
    "active",
    "active",
    "active",
    "Active",
    "ACTIVE",
    "inactive",
    "suspended",
    "closed",
];
pub(crate) const BOOLS: &[&str] = &[
    "Yes", "No", "true", "FALSE", "Y", "n", "1", "0", "True", "no",
];
pub(crate) const SALUTATIONS: &[&str] = &["Mr", "Ms", "Mrs", "Dr", "Mx", ""];
pub(crate) const GENDERS: &[&str] = &["male", "female", "Female", "MALE", "notknown"];
pub(crate) const STREETS: &[&str] = &[
    "High Street",
    "Station Road",
    "The Crescent",
    "Church Lane",
    "Victoria Road",
    "Mill Lane",
    "Park Avenue",
    "Queen's Road",
];
pub(crate) const CITIES: &[&str] = &[
    "London",
    "Manchester",
    "Leeds",
    "Bristol",
    "Glasgow",
    "Cardiff",
    "Belfast",
    "York",
];
pub(crate) const COUNTIES: &[&str] = &["Greater London", "West Yorkshire", "Avon", "Lanarkshire"];
pub(crate) const HOUSE_NAMES: &[&str] = &["Rose Cottage", "The Old Rectory", "Ivy House"];
pub(crate) const TIERS: &[&str] = &["bronze", "Silver", "gold", "platinum", ""];
pub(crate) const STORES: &[&str] = &[
    "Leeds, Trinity",
    "London Oxford Street",
    "Bristol Cabot Circus",
    "",
    "",
];

/// xorshift64*: deterministic, fast, good enough to vary test data.
pub(crate) struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Writes the export and returns its size in bytes.
pub(crate) fn generate(path: &Path, rows: u64) -> BenchResult<u64> {
    let mut w = csv::Writer::from_writer(BufWriter::with_capacity(1 << 20, File::create(path)?));
    w.write_record(HEADER)?;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for i in 1..=rows {
        w.write_record(row(&mut rng, i))?;
    }
    w.flush()?;
    drop(w);
    Ok(fs::metadata(path)?.len())
}

/// One valid row. References are `C` + 8 hex digits of `i` times an odd constant mod 2^32
/// (a bijection, so unique), which spreads them over the key space as CRM ids exported in
/// modification order would be, rather than handing sled sorted keys.
pub(crate) fn row(rng: &mut Rng, i: u64) -> [String; 27] {
    let reference = format!("C{:08X}", (i as u32).wrapping_mul(0x9E37_79B1));
    let (first, first_ascii) = *rng.pick(FIRST_NAMES);
    let (last, last_ascii) = *rng.pick(LAST_NAMES);
    let mut email = format!("{first_ascii}.{last_ascii}{i}@{}", rng.pick(DOMAINS));
    if rng.chance(10) {
        email = format!(" {}{} ", email[..1].to_ascii_uppercase(), &email[1..]); // padded
    }
    let tail = rng.below(10_000);
    let phone = match rng.below(4) {
        0 => format!("+44 20 7946 {tail:04}"),
        1 => format!("(020) 7946-{tail:04}"),
        2 => format!("020.7946.{tail:04}"),
        _ => format!("0207946{tail:04}"),
    };
    let tail = rng.below(1000);
    let mobile = match rng.below(4) {
        0 => format!("07700 900{tail:03}"),
        1 => format!("+44 7700 900{tail:03}"),
        2 => format!("07700-900-{tail:03}"),
        _ => String::new(),
    };
    let (y, m, d) = (1940 + rng.below(66), 1 + rng.below(12), 1 + rng.below(28));
    let dob = match rng.below(3) {
        0 => format!("{y}-{m:02}-{d:02}"),
        1 => format!("{d:02}/{m:02}/{y}"),
        _ => format!("{d:02}.{m:02}.{y}"),
    };
    let street = *rng.pick(STREETS);
    let street = if rng.chance(5) {
        format!("Flat {}, {street}", 1 + rng.below(20)) // a quoted cell
    } else {
        street.to_owned()
    };
    let postcode = format!(
        "{}{} {}{}{}",
        *rng.pick(&["SE", "N", "LS", "M", "BS", "G"]),
        1 + rng.below(20),
        1 + rng.below(9),
        char::from(b'A' + rng.below(26) as u8),
        char::from(b'A' + rng.below(26) as u8),
    );
    [
        reference,
        rng.pick(OWNERS).to_string(),
        rng.pick(STATUSES).to_string(),
        rng.pick(BOOLS).to_string(),
        email,
        if rng.chance(30) {
            format!("CU{i:07}")
        } else {
            String::new()
        },
        rng.pick(SALUTATIONS).to_string(),
        first.to_owned(),
        last.to_owned(),
        phone,
        mobile,
        dob,
        rng.pick(GENDERS).to_string(),
        rng.pick(BOOLS).to_string(),
        if rng.chance(10) {
            rng.pick(HOUSE_NAMES).to_string()
        } else {
            String::new()
        },
        if rng.chance(90) {
            (1 + rng.below(300)).to_string()
        } else {
            String::new()
        },
        street,
        rng.pick(CITIES).to_string(),
        String::new(),
        String::new(),
        if rng.chance(20) {
            rng.pick(COUNTIES).to_string()
        } else {
            String::new()
        },
        postcode,
        if rng.chance(95) {
            "United Kingdom"
        } else {
            "Ireland"
        }
        .to_owned(),
        rng.pick(TIERS).to_string(),
        rng.pick(STORES).to_string(),
        if rng.chance(10) {
            format!("REF{:06}", rng.below(1_000_000))
        } else {
            String::new()
        },
        format!(
            "2026-11-{:02} {:02}:{:02}:{:02}",
            1 + rng.below(30),
            rng.below(24),
            rng.below(60),
            rng.below(60)
        ),
    ]
}
