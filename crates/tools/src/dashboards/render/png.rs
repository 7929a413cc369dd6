//! A minimal PNG writer (8-bit RGB, one IDAT) over flate2 and crc32fast,
//! which the workspace already has: the `png`/`image` crates would bring a
//! second miniz_oxide for what is 60 lines here.

use std::io::Write;

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// Per row, the filter (none, sub, up) with the smallest sum of absolute
/// differences: flat panels and text then compress well.
fn filtered(width: usize, rgb: &[u8]) -> Vec<u8> {
    let stride = width * 3;
    let rows = rgb.len() / stride;
    let mut out = Vec::with_capacity(rows * (stride + 1));
    let mut candidates = [vec![0u8; stride], vec![0u8; stride], vec![0u8; stride]];
    for y in 0..rows {
        let row = &rgb[y * stride..(y + 1) * stride];
        let prev = (y > 0).then(|| &rgb[(y - 1) * stride..y * stride]);
        for x in 0..stride {
            let left = if x >= 3 { row[x - 3] } else { 0 };
            let up = prev.map_or(0, |p| p[x]);
            candidates[0][x] = row[x];
            candidates[1][x] = row[x].wrapping_sub(left);
            candidates[2][x] = row[x].wrapping_sub(up);
        }
        let cost =
            |c: &Vec<u8>| -> u64 { c.iter().map(|b| u64::from((*b as i8).unsigned_abs())).sum() };
        let (best, _) = candidates
            .iter()
            .enumerate()
            .min_by_key(|(_, c)| cost(c))
            .unwrap_or((0, &candidates[0]));
        out.push(best as u8);
        out.extend_from_slice(&candidates[best]);
    }
    out
}

/// Encode an RGB buffer (`width * height * 3` bytes) as PNG.
pub fn encode_rgb(width: u32, height: u32, rgb: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    // 8 bits, colour type 2 (RGB), deflate, adaptive filtering, no interlace.
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&filtered(width as usize, rgb))?;
    chunk(&mut out, b"IDAT", &z.finish()?);
    chunk(&mut out, b"IEND", &[]);
    Ok(out)
}

/// Width and height from a PNG's IHDR.
pub fn dimensions(png: &[u8]) -> Option<(u32, u32)> {
    if png.len() < 24 || &png[..8] != b"\x89PNG\r\n\x1a\n" || &png[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(png[16..20].try_into().ok()?);
    let h = u32::from_be_bytes(png[20..24].try_into().ok()?);
    Some((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn encodes_a_png_that_inflates_back() {
        let (w, h) = (5u32, 3u32);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 7) as u8).collect();
        let png = encode_rgb(w, h, &rgb).unwrap();
        assert_eq!(dimensions(&png), Some((5, 3)));
        // IDAT starts after the signature (8) and IHDR (4 + 4 + 13 + 4).
        let idat_len = u32::from_be_bytes(png[33..37].try_into().unwrap()) as usize;
        assert_eq!(&png[37..41], b"IDAT");
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(&png[41..41 + idat_len])
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(raw.len(), (h * (w * 3 + 1)) as usize);
        // Undo the filters: the pixels come back.
        let stride = (w * 3) as usize;
        let mut back: Vec<u8> = Vec::new();
        for y in 0..h as usize {
            let f = raw[y * (stride + 1)];
            for x in 0..stride {
                let v = raw[y * (stride + 1) + 1 + x];
                let left = if x >= 3 { back[y * stride + x - 3] } else { 0 };
                let up = if y > 0 { back[(y - 1) * stride + x] } else { 0 };
                back.push(match f {
                    0 => v,
                    1 => v.wrapping_add(left),
                    _ => v.wrapping_add(up),
                });
            }
        }
        assert_eq!(back, rgb);
    }
}
