//! A seeded synthetic dataset with the shape of MovieLens-100K.
//!
//! Users carry `gender`, `occupation`, `zip_code` and `age` fields (as
//! [`FieldValue::Token`], like RecBole's `ml-100k.user`) plus a hidden latent
//! taste that depends on their demographics; items carry 1–3 genres, a title
//! and a hidden latent vector built from their genres. Each user's events are
//! generated in time order: the next item is drawn with a probability that
//! grows with the user's taste for it, the item's popularity and its genre
//! overlap with the previous item (so order carries signal), and the rating
//! depends on the same taste. The same [`SyntheticConfig`] (including the
//! seed) always yields the same [`Dataset`].

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::{Dataset, FieldValue, Interaction, Item, User};

/// The 18 MovieLens genres (without `unknown`).
pub const GENRES: [&str; 18] = [
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
];

/// The 21 MovieLens-100K occupations.
pub const OCCUPATIONS: [&str; 21] = [
    "administrator",
    "artist",
    "doctor",
    "educator",
    "engineer",
    "entertainment",
    "executive",
    "healthcare",
    "homemaker",
    "lawyer",
    "librarian",
    "marketing",
    "none",
    "other",
    "programmer",
    "retired",
    "salesman",
    "scientist",
    "student",
    "technician",
    "writer",
];

/// Sizes and knobs of the synthetic generator.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticConfig {
    /// Number of users.
    pub users: usize,
    /// Number of items.
    pub items: usize,
    /// Minimum number of events per user.
    pub min_events: usize,
    /// Mean number of events per user (≥ `min_events`; the excess is geometric).
    pub mean_events: usize,
    /// Dimension of the hidden taste space.
    pub latent_dim: usize,
    /// Weight of the genre overlap with the previous item (sequential signal).
    pub sequence_weight: f64,
    /// Seed of the generator.
    pub seed: u64,
}

impl Default for SyntheticConfig {
    /// ML-100K-like sizes: 943 users, 1,682 items, ≈ 100 events per user.
    fn default() -> Self {
        SyntheticConfig {
            users: 943,
            items: 1682,
            min_events: 20,
            mean_events: 100,
            latent_dim: 8,
            sequence_weight: 2.0,
            seed: 7,
        }
    }
}

impl SyntheticConfig {
    /// A small configuration for tests (seconds to train on).
    pub fn small(seed: u64) -> Self {
        SyntheticConfig {
            users: 200,
            items: 150,
            min_events: 15,
            mean_events: 30,
            latent_dim: 6,
            sequence_weight: 2.0,
            seed,
        }
    }
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    // Box–Muller; `1 - u` keeps the logarithm finite.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn gaussian_vec(rng: &mut ChaCha8Rng, n: usize, scale: f64) -> Vec<f64> {
    (0..n).map(|_| normal(rng) * scale).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Generates a dataset from `config`. Deterministic per configuration.
pub fn generate(config: &SyntheticConfig) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let k = config.latent_dim.max(1);
    let n_items = config.items.max(1);
    let n_users = config.users;

    // Latent vectors of genres, occupations, genders and age groups.
    let genre_vecs: Vec<Vec<f64>> = (0..GENRES.len())
        .map(|_| gaussian_vec(&mut rng, k, 1.0))
        .collect();
    let occ_vecs: Vec<Vec<f64>> = (0..OCCUPATIONS.len())
        .map(|_| gaussian_vec(&mut rng, k, 0.8))
        .collect();
    let gender_vecs: Vec<Vec<f64>> = (0..2).map(|_| gaussian_vec(&mut rng, k, 0.6)).collect();
    let age_vecs: Vec<Vec<f64>> = (0..4).map(|_| gaussian_vec(&mut rng, k, 0.6)).collect();
    let zip_regions: Vec<u32> = (0..40).map(|_| rng.random_range(100..1000)).collect();

    // Items.
    let mut items = Vec::with_capacity(n_items);
    let mut item_vecs = Vec::with_capacity(n_items);
    let mut item_genres: Vec<Vec<usize>> = Vec::with_capacity(n_items);
    let mut popularity = Vec::with_capacity(n_items);
    for i in 0..n_items {
        let n_genres = 1 + rng.random_range(0..3usize);
        let mut genres: Vec<usize> = Vec::new();
        while genres.len() < n_genres {
            let g = rng.random_range(0..GENRES.len());
            if !genres.contains(&g) {
                genres.push(g);
            }
        }
        genres.sort_unstable();
        let mut v = gaussian_vec(&mut rng, k, 0.5);
        for &g in &genres {
            for (x, y) in v.iter_mut().zip(&genre_vecs[g]) {
                *x += y / n_genres as f64;
            }
        }
        // Zipf-like popularity by a random rank.
        let rank = 1.0 + rng.random::<f64>() * n_items as f64;
        popularity.push(-0.8 * rank.ln());
        let year = 1930 + rng.random_range(0..68u32);
        let mut fields = BTreeMap::new();
        fields.insert(
            "release_year".to_string(),
            FieldValue::Float(f64::from(year)),
        );
        items.push(Item {
            id: format!("{}", i + 1),
            title: Some(format!("Synthetic Movie {} ({year})", i + 1)),
            genres: genres.iter().map(|&g| GENRES[g].to_string()).collect(),
            fields,
        });
        item_vecs.push(v);
        item_genres.push(genres);
    }

    // Users.
    let mut users = Vec::with_capacity(n_users);
    let mut tastes = Vec::with_capacity(n_users);
    for u in 0..n_users {
        let gender = rng.random_range(0..2usize);
        let occ = rng.random_range(0..OCCUPATIONS.len());
        let age: u32 = (7
            + rng.random_range(0..20u32)
            + rng.random_range(0..20u32)
            + rng.random_range(0..27u32))
        .min(73);
        let age_group = match age {
            0..=24 => 0,
            25..=34 => 1,
            35..=49 => 2,
            _ => 3,
        };
        let region = zip_regions[rng.random_range(0..zip_regions.len())];
        let zip = format!("{region:03}{:02}", rng.random_range(0..100u32));
        let mut taste = gaussian_vec(&mut rng, k, 0.7);
        for d in 0..k {
            taste[d] += occ_vecs[occ][d] + gender_vecs[gender][d] + age_vecs[age_group][d];
        }
        let mut fields = BTreeMap::new();
        fields.insert("age".to_string(), FieldValue::Token(age.to_string()));
        fields.insert(
            "gender".to_string(),
            FieldValue::Token(if gender == 0 { "M" } else { "F" }.to_string()),
        );
        fields.insert(
            "occupation".to_string(),
            FieldValue::Token(OCCUPATIONS[occ].to_string()),
        );
        fields.insert("zip_code".to_string(), FieldValue::Token(zip));
        users.push(User {
            id: format!("{}", u + 1),
            fields,
        });
        tastes.push(taste);
    }

    // Events, per user in time order.
    let mut interactions = Vec::new();
    let base_time: i64 = 874_724_710; // 1997-09-20, like ML-100K
    let extra_mean = config.mean_events.saturating_sub(config.min_events) as f64;
    let mut weights = vec![0.0f64; n_items];
    for (u, taste) in tastes.iter().enumerate() {
        let extra = if extra_mean > 0.0 {
            (-(1.0 - rng.random::<f64>()).ln() * extra_mean) as usize
        } else {
            0
        };
        let n_events = (config.min_events + extra).min(n_items);
        let mut seen = vec![false; n_items];
        let mut t = base_time + rng.random_range(0..(180 * 86_400i64));
        let mut prev: Option<usize> = None;
        for _ in 0..n_events {
            let mut total = 0.0;
            for i in 0..n_items {
                if seen[i] {
                    weights[i] = 0.0;
                    continue;
                }
                let mut logit = 1.2 * dot(taste, &item_vecs[i]) + popularity[i];
                if let Some(p) = prev {
                    let overlap = item_genres[i]
                        .iter()
                        .filter(|g| item_genres[p].contains(g))
                        .count() as f64;
                    logit += config.sequence_weight * overlap / item_genres[p].len().max(1) as f64;
                    // Neighbouring ids form "series" watched in a row.
                    if i == p + 1 {
                        logit += config.sequence_weight;
                    }
                }
                let w = logit.clamp(-30.0, 30.0).exp();
                weights[i] = w;
                total += w;
            }
            if total <= 0.0 {
                break;
            }
            let mut r = rng.random::<f64>() * total;
            let mut chosen = n_items - 1;
            for (i, &w) in weights.iter().enumerate() {
                if w <= 0.0 {
                    continue;
                }
                if r < w {
                    chosen = i;
                    break;
                }
                r -= w;
            }
            if seen[chosen] {
                // Only possible through rounding at the very end: take any unseen item.
                match seen.iter().position(|s| !s) {
                    Some(i) => chosen = i,
                    None => break,
                }
            }
            seen[chosen] = true;
            let affinity = dot(taste, &item_vecs[chosen]);
            let rating = (3.2 + 0.6 * affinity + 0.7 * normal(&mut rng))
                .round()
                .clamp(1.0, 5.0) as f32;
            // Sessions: mostly short gaps, sometimes days or weeks.
            let gap = if rng.random::<f64>() < 0.8 {
                rng.random_range(1..600i64)
            } else {
                rng.random_range(3_600..(21 * 86_400i64))
            };
            t += gap;
            interactions.push(Interaction {
                user: u as u32,
                item: chosen as u32,
                rating: Some(rating),
                timestamp: t,
            });
            prev = Some(chosen);
        }
    }
    // File order: by time (ties by user), like a log.
    interactions.sort_by_key(|e| (e.timestamp, e.user));

    Dataset {
        name: format!("synthetic-seed-{}", config.seed),
        users,
        items,
        interactions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_dataset_and_different_seed_differs() {
        let a = generate(&SyntheticConfig::small(3));
        let b = generate(&SyntheticConfig::small(3));
        let c = generate(&SyntheticConfig::small(4));
        assert_eq!(a, b);
        assert_ne!(a.interactions, c.interactions);
    }

    #[test]
    fn shape_matches_the_config() {
        let cfg = SyntheticConfig::small(1);
        let d = generate(&cfg);
        assert_eq!(d.users.len(), cfg.users);
        assert_eq!(d.items.len(), cfg.items);
        let mut per_user = vec![0usize; cfg.users];
        for e in &d.interactions {
            per_user[e.user as usize] += 1;
            assert!((e.item as usize) < cfg.items);
            let r = e.rating.expect("synthetic events are rated");
            assert!((1.0..=5.0).contains(&r));
        }
        assert!(per_user.iter().all(|&n| n >= cfg.min_events));
        for u in &d.users {
            for f in ["age", "gender", "occupation", "zip_code"] {
                assert!(u.fields.contains_key(f), "user {} lacks {f}", u.id);
            }
        }
        assert!(d.items.iter().all(|i| !i.genres.is_empty()));
        // Time order in the file.
        assert!(
            d.interactions
                .windows(2)
                .all(|w| w[0].timestamp <= w[1].timestamp)
        );
    }
}
