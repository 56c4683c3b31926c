-- Demo and e2e data, inserted with plain SQL as any other tool would (every id and every column
-- not named here has a server-side default). Idempotent: it clears the demo tables first.
BEGIN;
TRUNCATE score_history, messages, conversations, users, job_executions;

-- Six users across the chapters, idle long enough to be past each chapter's grace period.
INSERT INTO users (id, chapter, relationship_score, last_interaction_at) VALUES
  ('00000000-0000-0000-0000-000000000001', 1, 60, now() - interval '20 hours'),
  ('00000000-0000-0000-0000-000000000002', 2, 45, now() - interval '30 hours'),
  ('00000000-0000-0000-0000-000000000003', 3, 70, now() - interval '40 hours'),
  ('00000000-0000-0000-0000-000000000004', 4, 80, now() - interval '3 days'),
  ('00000000-0000-0000-0000-000000000005', 5, 1, now() - interval '10 days'),
  ('00000000-0000-0000-0000-000000000006', 1, 90, now() - interval '1 hour');

-- Three conversations stuck in processing for two hours: recover fails them.
INSERT INTO conversations (user_id, status, last_message_at, updated_at, processing_started_at)
SELECT '00000000-0000-0000-0000-000000000001', 'processing', now() - interval '3 hours',
       now() - interval '2 hours', now() - interval '2 hours'
FROM generate_series(1, 3);

-- Four idle conversations with a transcript: process summarises them.
INSERT INTO conversations (id, user_id, status, last_message_at)
SELECT ('00000000-0000-0000-0001-00000000000' || n)::uuid,
       ('00000000-0000-0000-0000-00000000000' || n)::uuid, 'active', now() - interval '1 hour'
FROM generate_series(1, 4) AS n;
INSERT INTO messages (conversation_id, role, content, created_at)
SELECT ('00000000-0000-0000-0001-00000000000' || n)::uuid, role, content,
       now() - interval '1 hour' - (m || ' minutes')::interval
FROM generate_series(1, 4) AS n,
     (VALUES (3, 'user', 'Hi! Can you help me plan the weekend?'),
             (2, 'assistant', 'Of course. A hike on Saturday and a museum on Sunday?'),
             (1, 'user', 'Perfect, thank you.')) AS t(m, role, content);

-- One idle conversation with no messages: the summarise stage reports an error for it.
INSERT INTO conversations (id, user_id, status, last_message_at)
VALUES ('00000000-0000-0000-0002-000000000001', '00000000-0000-0000-0000-000000000006',
        'active', now() - interval '1 hour');

-- One conversation still in progress (not idle): left alone.
INSERT INTO conversations (user_id, status, last_message_at)
VALUES ('00000000-0000-0000-0000-000000000006', 'active', now());
COMMIT;
