//! `datetime.fromisoformat(text)` → `timestamp()` (a naive time taken as UTC,
//! as `dialects._ttft_ms` does) for the shape Langfuse writes:
//! `YYYY-MM-DDTHH:MM:SS[.f{1,6}][±HH:MM]` (after the decoder's
//! `replace("Z", "+00:00")`). Every other text (other ISO shapes, out-of-range
//! fields) is left to Python.

use crate::pyval::Unsupported;

const NO: Unsupported = Unsupported("timestamp text not handled natively");

fn num(b: &[u8], at: usize, n: usize) -> Result<i64, Unsupported> {
    let part = b.get(at..at + n).ok_or(NO)?;
    let mut v = 0i64;
    for &c in part {
        if !c.is_ascii_digit() {
            return Err(NO);
        }
        v = v * 10 + (c - b'0') as i64;
    }
    Ok(v)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 {
                29
            } else {
                28
            }
        }
    }
}

/// Microseconds since the epoch (UTC) of an aware ISO timestamp.
pub fn parse_micros(text: &str) -> Result<i64, Unsupported> {
    let b = text.as_bytes();
    if b.len() < 19 {
        return Err(NO);
    }
    let year = num(b, 0, 4)?;
    let month = num(b, 5, 2)?;
    let day = num(b, 8, 2)?;
    let hour = num(b, 11, 2)?;
    let minute = num(b, 14, 2)?;
    let second = num(b, 17, 2)?;
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return Err(NO);
    }
    let mut i = 19;
    let mut micros = 0i64;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let n = i - start;
        if n == 0 || n > 6 {
            return Err(NO);
        }
        micros = num(b, start, n)? * 10i64.pow((6 - n) as u32);
    }
    let (off_h, off_m) = if i == b.len() {
        (0, 0) // naive: UTC
    } else {
        if b.len() != i + 6 || !(b[i] == b'+' || b[i] == b'-') || b[i + 3] != b':' {
            return Err(NO);
        }
        (num(b, i + 1, 2)?, num(b, i + 4, 2)?)
    };
    if !(1..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
        || off_h > 23
        || off_m > 59
    {
        return Err(NO);
    }
    let mut offset = (off_h * 3600 + off_m * 60) * 1_000_000;
    if i < b.len() && b[i] == b'-' {
        offset = -offset;
    }
    let days = days_from_civil(year, month, day);
    let total = (days * 86_400 + hour * 3600 + minute * 60 + second) * 1_000_000 + micros - offset;
    // timestamp() divides the exact microsecond count by 10**6 (int / int,
    // correctly rounded); an f64 division of two exact operands is the same.
    if total.unsigned_abs() >= 1u64 << 53 {
        return Err(NO);
    }
    Ok(total)
}
