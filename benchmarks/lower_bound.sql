-- (c) The lower bound: the same transformation as the pipeline, as one plain DuckDB SQL script.
-- Parameters (replaced by benchmarks/duckdb_sql.py): {source}, {psl}, {event_table}, {hourly},
-- {latest} (now + 1 day, UTC). Rules: shared/spec/data_contract.md (see benchmarks/reference.py).
SET TimeZone = 'UTC';

-- Public Suffix List rules (the file the publicsuffixlist package ships), for url_level1.
CREATE TEMP TABLE psl AS
SELECT DISTINCT lower(trim(rule)) AS rule
FROM read_csv('{psl}', columns = {{'rule': 'VARCHAR'}}, header = false, delim = chr(1), quote = '',
              escape = '', auto_detect = false)
WHERE trim(rule) <> '' AND NOT starts_with(trim(rule), '//');

-- Every line once: the JSON is parsed once per line (json_extract with a list of paths) and the
-- fields' types checked on the extracted values. line_number keeps the file order (for "the first
-- copy wins"); numbering after the extraction also keeps DuckDB from pushing the type filters below
-- it, which would repeat json_extract once per condition.
CREATE TEMP TABLE typed_events AS
WITH lines AS (
    SELECT rtrim(line, chr(13)) AS text
    FROM read_csv('{source}', columns = {{'line': 'VARCHAR'}}, header = false, delim = chr(1),
                  quote = '', escape = '', auto_detect = false)
), objects AS (
    SELECT row_number() OVER () AS line_number, j[1] AS "timestamp", j[2] AS event_id, j[3] AS "user",
           j[4] AS user_id, j[5] AS session_id, j[6] AS ip, j[7] AS action, j[8] AS url
    FROM (SELECT json_extract(text, ['$.timestamp', '$.event_id', '$.user', '$.user.id', '$.user.session_id',
                                     '$.user.ip', '$.action', '$.url']) AS j
          FROM lines WHERE json_valid(text) AND json_type(text) = 'OBJECT')
), typed AS (
    SELECT line_number,
           try_strptime(trim("timestamp" ->> '$'), '%d/%m/%Y %H:%M:%S') AS time_stamp,
           event_id ->> '$' AS event_id, user_id ->> '$' AS user_id, action ->> '$' AS action, url ->> '$' AS url
    FROM objects
    WHERE json_type("timestamp") = 'VARCHAR'
      AND json_type(event_id) IN ('VARCHAR', 'BIGINT', 'UBIGINT')
      AND json_type("user") = 'OBJECT'
      AND json_type(user_id) IN ('VARCHAR', 'BIGINT', 'UBIGINT')
      AND coalesce(json_type(session_id), 'NULL') IN ('NULL', 'VARCHAR', 'BIGINT', 'UBIGINT')
      AND coalesce(json_type(ip), 'NULL') IN ('NULL', 'VARCHAR')
      AND json_type(action) = 'VARCHAR'
      AND json_type(url) = 'VARCHAR'
)
SELECT * FROM typed
WHERE time_stamp >= TIMESTAMP '2017-01-01' AND time_stamp <= TIMESTAMP '{latest}'
  AND trim(event_id) <> '' AND trim(user_id) <> '' AND trim(action) <> '';

-- URL rules once per distinct URL: scheme, host, path segments, then the registrable domain.
CREATE TEMP TABLE urls AS
WITH distinct_urls AS (
    SELECT DISTINCT url FROM typed_events
), normalised AS (
    SELECT url,
           CASE WHEN contains(trim(url), '://') THEN trim(url) ELSE 'http://' || ltrim(trim(url), '/') END AS u
    FROM distinct_urls
), split AS (
    SELECT url,
           lower(regexp_extract(u, '^([^:/?#]+)://', 1)) AS scheme,
           rtrim(lower(regexp_replace(regexp_replace(regexp_extract(u, '^[^:/?#]+://([^/?#]*)', 1),
                                                     '^.*@', ''), ':[0-9]*$', '')), '.') AS host,
           list_filter(string_split(regexp_extract(u, '^[^:/?#]+://[^/?#]*([^?#]*)', 1), '/'), s -> s <> '') AS segments
    FROM normalised
), hosts AS (
    SELECT DISTINCT host, string_split(host, '.') AS labels FROM split
    WHERE host <> '' AND NOT contains(host, '..') AND NOT regexp_matches(host, '\s')
      AND NOT regexp_matches(host, '^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$') AND NOT starts_with(host, '[')
), suffixes AS (  -- every suffix of every host: k = number of labels
    SELECT host, len(labels) AS n, k, array_to_string(labels[len(labels) - k + 1:], '.') AS suffix,
           array_to_string(labels[len(labels) - k + 2:], '.') AS parent
    FROM hosts, range(1, len(labels) + 1) AS r(k)
), matched AS (
    SELECT s.host, s.n,
           max(CASE WHEN p.rule = s.suffix OR p.rule = '*.' || s.parent THEN s.k END) AS rule_k,
           max(CASE WHEN p.rule = '!' || s.suffix THEN s.k - 1 END) AS exception_k
    FROM suffixes s LEFT JOIN psl p ON p.rule IN (s.suffix, '*.' || s.parent, '!' || s.suffix)
    GROUP BY ALL
), domains AS (
    SELECT host, coalesce(exception_k, rule_k, 1) AS suffix_k, n FROM matched
)
SELECT s.url,
       array_to_string(string_split(d.host, '.')[d.n - d.suffix_k:], '.') AS url_level1,
       s.segments[1] AS url_level2, s.segments[2] AS url_level3
FROM split s JOIN domains d ON s.host = d.host
WHERE s.scheme IN ('http', 'https') AND d.n > d.suffix_k;

-- Accepted events (a valid URL), without duplicates: the same event_id in the same UTC hour
-- keeps its first line.
CREATE TEMP TABLE events AS
SELECT e.user_id, e.time_stamp, u.url_level1, u.url_level2, u.url_level3, trim(e.action) AS activity, e.event_id
FROM typed_events e JOIN urls u ON e.url = u.url
QUALIFY row_number() OVER (PARTITION BY e.event_id, date_trunc('hour', e.time_stamp) ORDER BY e.line_number) = 1;
DROP TABLE typed_events;

COPY (
    SELECT user_id, strftime(time_stamp, '%Y-%m-%dT%H:%M:%SZ') AS time_stamp, url_level1, url_level2,
           url_level3, activity, event_id
    FROM events ORDER BY events.time_stamp, event_id
) TO '{event_table}' (HEADER, DELIMITER ',');

COPY (
    SELECT strftime(time_stamp, '%Y%m%d%H') AS time_bucket, url_level1, url_level2, activity,
           count(*) AS activity_count, count(DISTINCT user_id) AS user_count
    FROM events GROUP BY ALL ORDER BY ALL NULLS FIRST
) TO '{hourly}' (HEADER, DELIMITER ',');
