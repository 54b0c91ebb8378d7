-- (c) The lower bound: the pipeline's work on one source file as one plain DuckDB SQL script.
-- Parameters (filled in by benchmarks/duckdb_sql.py): {source}, {psl}, {latest} (now + 1 day,
-- UTC), {memory_limit}, {max_line_bytes}, {raw_limit}, {rejected_at}, and the four output files
-- {event_table}, {hourly}, {sessions}, {rejected}. Rules: hipages_pipeline/lib/contract.py
-- (REASON_CODES, the tables), lib/events/rules_sql.py, lib/events/urls.py, lib/sql/sessions.py.
SET TimeZone = 'UTC';
SET memory_limit = '{memory_limit}';

-- Public Suffix List rules (the file the publicsuffixlist package ships), for url_level1.
CREATE TEMP TABLE psl AS
SELECT DISTINCT lower(trim(rule)) AS rule
FROM read_csv('{psl}', columns = {{'rule': 'VARCHAR'}}, header = false, delim = chr(1), quote = '',
              escape = '', auto_detect = false)
WHERE trim(rule) <> '' AND NOT starts_with(trim(rule), '//');

-- 1. Every line once (an empty line reads as NULL), framed, parsed once (json_type and
-- json_extract_string, each with the list of paths) and judged: the first failing rule gives the
-- reason and the field (the line, then timestamp, then the other fields; the URL is judged in
-- step 2). Rejected lines keep their text (raw_line), and so do the lines whose URL does not start
-- with http:// or https:// (a cheap test: they may have a bad URL); events keep their fields. The table keeps
-- the file's order (preserve_insertion_order), so rowid + 1 is the line number: numbering with
-- row_number() OVER () would run the whole statement on one thread.
CREATE TEMP TABLE judged AS
WITH lines AS (
    SELECT coalesce(rtrim(line, chr(13)), '') AS text
    FROM read_csv('{source}', columns = {{'line': 'VARCHAR'}}, header = false, delim = chr(1), quote = '',
                  escape = '', auto_detect = false, strict_mode = false)
), framed AS (
    SELECT *, CASE WHEN strlen(text) > {max_line_bytes} THEN 'line_too_long'
                   WHEN regexp_full_match(text, '\s*') THEN 'blank_line'
                   WHEN NOT json_valid(text) THEN 'invalid_json' END AS line_reason
    FROM lines
), parsed AS (
    SELECT *,
        CASE WHEN line_reason IS NULL THEN json_type(text, ['$', '$.timestamp', '$.event_id', '$.user', '$.user.id',
            '$.user.session_id', '$.user.ip', '$.action', '$.url']) END AS tp,
        CASE WHEN line_reason IS NULL AND tp[1] = 'OBJECT' THEN json_extract_string(text, ['$.timestamp',
            '$.event_id', '$.user', '$.user.id', '$.user.session_id', '$.user.ip', '$.action', '$.url']) END AS v
    FROM framed
), typed AS (
    SELECT text, coalesce(line_reason, CASE WHEN tp[1] <> 'OBJECT' THEN 'not_an_object' END) AS line_reason,
        coalesce(tp[2], 'NULL') AS t_ts, coalesce(tp[3], 'NULL') AS t_id, coalesce(tp[4], 'NULL') AS t_user,
        coalesce(tp[5], 'NULL') AS t_uid, coalesce(tp[6], 'NULL') AS t_sid, coalesce(tp[7], 'NULL') AS t_ip,
        coalesce(tp[8], 'NULL') AS t_action, coalesce(tp[9], 'NULL') AS t_url,
        v[1] AS v_ts, v[2] AS event_id, v[4] AS user_id, v[7] AS action, v[8] AS url,
        try_strptime(CASE WHEN tp[2] = 'VARCHAR' THEN trim(v[1]) END, '%d/%m/%Y %H:%M:%S') AS time_stamp
    FROM parsed
), rules AS (
    SELECT *, CASE
        WHEN line_reason IS NOT NULL THEN [line_reason, NULL]
        WHEN t_ts = 'NULL' THEN ['missing_field', 'timestamp']
        WHEN t_ts <> 'VARCHAR' THEN ['wrong_type', 'timestamp']
        WHEN trim(v_ts) = '' THEN ['missing_field', 'timestamp']
        WHEN time_stamp IS NULL THEN ['bad_timestamp', 'timestamp']
        WHEN time_stamp < TIMESTAMP '2017-01-01' OR time_stamp > TIMESTAMP '{latest}' THEN ['timestamp_out_of_range', 'timestamp']
        WHEN t_id = 'NULL' THEN ['missing_field', 'event_id']
        WHEN t_id NOT IN ('VARCHAR', 'BIGINT', 'UBIGINT') THEN ['wrong_type', 'event_id']
        WHEN trim(event_id) = '' THEN ['missing_field', 'event_id']
        WHEN t_user = 'NULL' THEN ['missing_field', 'user']
        WHEN t_user <> 'OBJECT' THEN ['wrong_type', 'user']
        WHEN t_uid = 'NULL' THEN ['missing_field', 'user.id']
        WHEN t_uid NOT IN ('VARCHAR', 'BIGINT', 'UBIGINT') THEN ['wrong_type', 'user.id']
        WHEN trim(user_id) = '' THEN ['missing_field', 'user.id']
        WHEN t_sid NOT IN ('NULL', 'VARCHAR', 'BIGINT', 'UBIGINT') THEN ['wrong_type', 'user.session_id']
        WHEN t_ip NOT IN ('NULL', 'VARCHAR') THEN ['wrong_type', 'user.ip']
        WHEN t_action = 'NULL' THEN ['missing_field', 'action']
        WHEN t_action <> 'VARCHAR' THEN ['wrong_type', 'action']
        WHEN trim(action) = '' THEN ['missing_field', 'action']
        WHEN t_url = 'NULL' THEN ['missing_field', 'url']
        WHEN t_url <> 'VARCHAR' THEN ['wrong_type', 'url']
    END AS verdict
    FROM typed
)
SELECT verdict[1] AS reason, verdict[2] AS field,
    time_stamp,
    CASE WHEN verdict IS NULL THEN event_id END AS event_id, CASE WHEN verdict IS NULL THEN user_id END AS user_id,
    CASE WHEN verdict IS NULL THEN trim(action) END AS activity, CASE WHEN verdict IS NULL THEN url END AS url,
    CASE WHEN verdict IS NOT NULL THEN CASE
        WHEN verdict[1] = 'line_too_long' THEN format('the line has {{}} bytes, more than the limit of {max_line_bytes}', strlen(text))
        WHEN verdict[1] = 'blank_line' THEN 'the line is blank'
        WHEN verdict[1] = 'invalid_json' THEN format('the line is not valid JSON: {{}}', left(text, 80))
        WHEN verdict[1] = 'not_an_object' THEN 'the line is a JSON array, string, number, boolean or null, not an object'
        WHEN verdict[1] = 'bad_timestamp' THEN format('timestamp {{}} is not a real date in DD/MM/YYYY HH:MM:SS form', v_ts)
        WHEN verdict[1] = 'timestamp_out_of_range' THEN format('timestamp {{}} is outside 2017-01-01 .. {latest}', v_ts)
        ELSE format('field {{}} is {{}}', verdict[2], CASE WHEN verdict[1] = 'wrong_type' THEN 'of the wrong type'
                                                       ELSE 'missing, null or empty' END)
    END END AS message,
    CASE WHEN verdict IS NOT NULL OR url_suspect THEN left(text, {raw_limit}) END AS raw_line,
    CASE WHEN verdict IS NOT NULL OR url_suspect THEN strlen(text) END AS raw_bytes
FROM (SELECT *, verdict IS NULL AND NOT (url ^@ 'https://' OR url ^@ 'http://') AS url_suspect FROM rules);

-- 2. URL rules once per distinct URL of the lines that passed step 1: scheme, host, path
-- segments, then the registrable domain by the Public Suffix List; url_error for the others.
CREATE TEMP TABLE urls AS
WITH distinct_urls AS (
    SELECT DISTINCT url FROM judged WHERE reason IS NULL
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
       CASE WHEN s.scheme IN ('http', 'https') AND d.n > d.suffix_k
            THEN array_to_string(string_split(d.host, '.')[d.n - d.suffix_k:], '.') END AS url_level1,
       s.segments[1] AS url_level2, s.segments[2] AS url_level3,
       CASE WHEN s.scheme NOT IN ('http', 'https') THEN format('url {{}} has scheme {{}}, expected http or https', s.url, s.scheme)
            WHEN d.host IS NULL THEN format('url {{}} has no valid host', s.url)
            WHEN d.n <= d.suffix_k THEN format('url {{}} host {{}} has no registrable domain', s.url, s.host) END AS url_error
FROM split s LEFT JOIN domains d ON s.host = d.host;

-- 3. Events (a valid URL), without duplicates: the same event_id in the same UTC hour keeps its
-- first line; the others are counted as duplicates.
CREATE TEMP TABLE events AS
SELECT j.user_id, j.time_stamp AS time_stamp, u.url_level1, u.url_level2, u.url_level3, j.activity, j.event_id,
       row_number() OVER (PARTITION BY j.event_id, date_trunc('hour', j.time_stamp) ORDER BY j.rowid) AS copy
FROM judged j JOIN urls u ON j.url = u.url
WHERE j.reason IS NULL AND u.url_error IS NULL;
CREATE TEMP TABLE duplicates AS SELECT event_id, time_stamp FROM events WHERE copy > 1;
DELETE FROM events WHERE copy > 1;

-- 4. The quarantine: the rejected lines of step 1 and the bad URLs of step 2. part 0: lines with an
-- hour (rejected_events), part 1: lines without one (rejected_without_hour).
CREATE TEMP TABLE rejected AS
WITH all_rejected AS (
    SELECT rowid + 1 AS line_number, time_stamp, reason, field, message, raw_line, raw_bytes
    FROM judged WHERE reason IS NOT NULL
    UNION ALL
    SELECT j.rowid + 1, j.time_stamp, 'bad_url', 'url', u.url_error, j.raw_line, j.raw_bytes
    FROM judged j JOIN urls u ON j.url = u.url WHERE j.reason IS NULL AND u.url_error IS NOT NULL
)
SELECT CASE WHEN time_stamp IS NULL OR reason = 'timestamp_out_of_range' THEN 1 ELSE 0 END AS part, *
FROM all_rejected;
-- Bad URLs that passed the cheap test (e.g. http://localhost/): their lines are read again below.
CREATE TEMP TABLE unkept_urls AS
SELECT DISTINCT j.url FROM judged j JOIN urls u ON j.url = u.url
WHERE j.reason IS NULL AND u.url_error IS NOT NULL AND j.raw_line IS NULL;
DROP TABLE judged;

-- @only-when unkept_urls: run by duckdb_sql.py only when that table has rows (it has none on the
-- generated data): the file again, in order (so rowid + 1 is the line number), keeping the text of
-- the lines with those URLs only.
CREATE TEMP TABLE reread AS
SELECT CASE WHEN CASE WHEN json_valid(line) THEN json_extract_string(line, '$.url') END IN (SELECT url FROM unkept_urls)
            THEN coalesce(rtrim(line, chr(13)), '') END AS text
FROM read_csv('{source}', columns = {{'line': 'VARCHAR'}}, header = false, delim = chr(1), quote = '',
              escape = '', auto_detect = false, strict_mode = false);
UPDATE rejected SET raw_line = left(r.text, {raw_limit}), raw_bytes = strlen(r.text)
FROM (SELECT rowid + 1 AS line_number, text FROM reread WHERE text IS NOT NULL) r
WHERE rejected.reason = 'bad_url' AND rejected.raw_line IS NULL AND rejected.line_number = r.line_number;
DROP TABLE reread;
-- @end

-- 5. Sessions per (user_id, url_level1): a gap of more than 30 minutes starts a new chain; a chain
-- longer than 24 hours is cut (a recursive CTE finds each next start: the first event more than
-- 24 hours after the current one), every other chain is one session. In buckets of users (about
-- a million events each, as the pipeline does) so that the window functions fit in memory_limit.
CREATE TEMP TABLE sessions (session_id VARCHAR, user_id VARCHAR, url_level1 VARCHAR, session_start TIMESTAMP,
    session_end TIMESTAMP, duration_seconds BIGINT, event_count BIGINT, page_view_count BIGINT,
    button_click_count BIGINT, list_directory_count BIGINT, claim_count BIGINT, other_count BIGINT,
    landing_url_level2 VARCHAR, exit_url_level2 VARCHAR, is_bounce BOOLEAN, converted BOOLEAN);
-- @for-each-bucket: run by duckdb_sql.py once per bucket (@bucket@ = 0 .. @buckets@ - 1)
INSERT INTO sessions
WITH RECURSIVE gaps AS (
    SELECT *, time_stamp - lag(time_stamp) OVER (PARTITION BY user_id, url_level1 ORDER BY time_stamp, event_id) AS gap
    FROM events WHERE hash(user_id) % @buckets@ = @bucket@
), chains AS (
    SELECT *, sum(CASE WHEN gap IS NULL OR gap > INTERVAL 1800 SECOND THEN 1 ELSE 0 END) OVER (
        PARTITION BY user_id, url_level1 ORDER BY time_stamp, event_id ROWS UNBOUNDED PRECEDING) AS chain
    FROM gaps
), long_chains AS (
    SELECT user_id, url_level1, chain, min(time_stamp) AS chain_start FROM chains
    GROUP BY ALL HAVING max(time_stamp) - min(time_stamp) > INTERVAL 86400 SECOND
), long_events AS (
    SELECT c.* FROM chains c SEMI JOIN long_chains USING (user_id, url_level1, chain)
), starts(user_id, url_level1, chain, start) AS (
    SELECT user_id, url_level1, chain, chain_start FROM long_chains
    UNION ALL
    SELECT s.user_id, s.url_level1, s.chain, min(e.time_stamp)
    FROM starts s JOIN long_events e USING (user_id, url_level1, chain)
    WHERE e.time_stamp > s.start + INTERVAL 86400 SECOND AND e.time_stamp <= s.start + INTERVAL 88200 SECOND
    GROUP BY ALL
), assigned AS (
    SELECT c.*, NULL::TIMESTAMP AS cut FROM chains c ANTI JOIN long_chains USING (user_id, url_level1, chain)
    UNION ALL
    SELECT e.*, s.start FROM long_events e ASOF JOIN starts s
        ON e.user_id = s.user_id AND e.url_level1 = s.url_level1 AND e.chain = s.chain AND e.time_stamp >= s.start
), grouped AS (
    SELECT user_id, url_level1, coalesce(cut, min(time_stamp)) AS session_start, max(time_stamp) AS session_end,
        count(*) AS event_count,
        count(*) FILTER (WHERE activity = 'page_view') AS page_view_count,
        count(*) FILTER (WHERE activity = 'button_click') AS button_click_count,
        count(*) FILTER (WHERE activity = 'list_directory') AS list_directory_count,
        count(*) FILTER (WHERE activity = 'claim') AS claim_count,
        count(*) FILTER (WHERE activity NOT IN ('page_view', 'button_click', 'list_directory', 'claim')) AS other_count,
        arg_min_null(url_level2, (time_stamp, event_id)) AS landing_url_level2,
        arg_max_null(url_level2, (time_stamp, event_id)) AS exit_url_level2
    FROM assigned GROUP BY user_id, url_level1, chain, cut
)
SELECT md5(concat_ws('|', user_id, url_level1, strftime(session_start, '%Y-%m-%dT%H:%M:%S.%fZ'))) AS session_id,
    user_id, url_level1, session_start, session_end, (epoch_us(session_end) - epoch_us(session_start)) // 1000000 AS duration_seconds,
    event_count, page_view_count, button_click_count, list_directory_count, claim_count, other_count,
    landing_url_level2, exit_url_level2, event_count = 1 AS is_bounce, claim_count > 0 AS converted
FROM grouped;
-- @end

-- 6. The four whole CSV files, as the pipeline writes them (RFC 4180, CRLF, times ISO 8601 UTC).
COPY (
    SELECT user_id, strftime(time_stamp, '%Y-%m-%dT%H:%M:%SZ') AS time_stamp, url_level1, url_level2,
           url_level3, activity, event_id
    FROM events ORDER BY events.time_stamp, event_id
) TO '{event_table}' (FORMAT csv, HEADER, DELIMITER ',', QUOTE '"', ESCAPE '"', NEW_LINE '\r\n');

COPY (
    SELECT strftime(time_stamp, '%Y%m%d%H') AS time_bucket, url_level1, url_level2, activity,
           count(*) AS activity_count, count(DISTINCT user_id) AS user_count
    FROM events GROUP BY ALL ORDER BY ALL NULLS FIRST
) TO '{hourly}' (FORMAT csv, HEADER, DELIMITER ',', QUOTE '"', ESCAPE '"', NEW_LINE '\r\n');

COPY (
    SELECT * REPLACE (strftime(session_start, '%Y-%m-%dT%H:%M:%SZ') AS session_start,
                      strftime(session_end, '%Y-%m-%dT%H:%M:%SZ') AS session_end)
    FROM sessions ORDER BY sessions.session_start, user_id, url_level1, session_id
) TO '{sessions}' (FORMAT csv, HEADER, DELIMITER ',', QUOTE '"', ESCAPE '"', NEW_LINE '\r\n');

COPY (
    SELECT '{source}' AS source_file, line_number, strftime(time_stamp, '%Y-%m-%dT%H:%M:%SZ') AS time_stamp,
           reason, field, message, raw_line, raw_bytes, '{rejected_at}' AS rejected_at
    FROM rejected ORDER BY part, line_number
) TO '{rejected}' (FORMAT csv, HEADER, DELIMITER ',', QUOTE '"', ESCAPE '"', NEW_LINE '\r\n');
