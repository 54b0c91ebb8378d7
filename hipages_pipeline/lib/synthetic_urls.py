"""The generator's URL paths: per action, the path templates the sample shows and their shares,
filled from a vocabulary (trades, rooms, article slugs, businesses, search terms)."""

from __future__ import annotations

import numpy as np

ACTIONS = ["page_view", "button_click", "list_directory", "claim"]
ACTION_SHARES = [0.47, 0.29, 0.12, 0.12]

TRADES = [
    "electricians", "plumbers", "carpenters", "painters", "builders", "landscapers", "roofers",
    "tilers", "concreters", "cleaners", "handyman", "fencing", "gardeners", "bricklayers",
    "plasterers", "air_conditioning", "pest_control", "locksmiths", "glaziers", "flooring",
    "kitchens", "bathroom_renovations", "architects", "removalists", "solar_power",
    "pool_builders", "arborists", "decking", "interior_designers", "cabinet_makers",
]
ROOMS = ["bathrooms", "kitchens", "bedrooms", "living_rooms", "outdoor", "laundries", "gardens",
         "pools", "decks", "facades", "home_offices", "dining_rooms", "garages", "stairs", "roofs"]
# (path template, share) per action; {trade}, {room}, {slug}, {business}, {service}, {term} are filled below.
PATHS_BY_ACTION: dict[str, list[tuple[str, float]]] = {
    "page_view": [("articles", 0.20), ("articles/{slug}", 0.17), ("get_quotes_simple?search_str={term}", 0.25),
                  ("connect/{business}/service/{service}", 0.13), ("photos/{room}", 0.13),
                  ("find/{trade}", 0.12)],
    "button_click": [("get_quotes_simple?search_str={term}", 0.40), ("advertise", 0.20),
                     ("connect/{business}/service/{service}", 0.20), ("find/{trade}", 0.20)],
    "list_directory": [("find/{trade}", 1.0)],
    "claim": [("find/{trade}", 1.0)],
}
VOCABULARY_SIZES = {"slug": 300, "business": 2000, "term": 5000}


def url_vocabulary(rng: np.random.Generator) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """All URL paths per template, and, per action, the path indexes and their probabilities."""
    slugs = [f"{a}-{b}-{i}" for i, (a, b) in enumerate(zip(
        rng.choice(["how", "best", "cost", "guide", "ideas", "tips", "why"], VOCABULARY_SIZES["slug"]),
        rng.choice(TRADES + ROOMS, VOCABULARY_SIZES["slug"])))]
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    terms = ["".join(rng.choice(letters, int(k))) for k in rng.integers(3, 10, VOCABULARY_SIZES["term"])]
    businesses = [f"{rng.choice(['sf', 'ace', 'pro', 'top', 'best', 'city'])}{t}{i}"
                  for i, t in enumerate(rng.choice(TRADES, VOCABULARY_SIZES["business"]))]
    fill = {
        "trade": TRADES, "room": ROOMS, "slug": slugs, "term": terms,
        "business": businesses,
    }
    paths: list[str] = []
    template_index: dict[str, np.ndarray] = {}
    for template in dict.fromkeys(t for options in PATHS_BY_ACTION.values() for t, _ in options):
        start = len(paths)
        if "{business}" in template:
            services = rng.integers(100000, 999999, len(businesses))
            paths += [template.format(business=b, service=s) for b, s in zip(businesses, services)]
        else:
            key = next((k for k in fill if "{" + k + "}" in template), None)
            paths += [template.format(**{key: v}) for v in fill[key]] if key else [template]
        template_index[template] = np.arange(start, len(paths))
    indexes, probabilities = [], []
    for action in ACTIONS:
        options = PATHS_BY_ACTION[action]
        idx = np.concatenate([template_index[t] for t, _ in options])
        p = np.concatenate([np.full(len(template_index[t]), share / len(template_index[t])) for t, share in options])
        indexes.append(idx)
        probabilities.append(p / p.sum())
    return paths, indexes, probabilities
