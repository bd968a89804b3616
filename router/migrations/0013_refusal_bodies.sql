-- A refused message's body is kept only up to `router.refusal_body_bytes`: its whole length
-- and a keyed hash (HMAC under the platform id secret, never a plain hash of personal data)
-- are kept instead of the rest. Older rows keep their whole body until purged.
ALTER TABLE refusals ADD COLUMN body_bytes integer;
ALTER TABLE refusals ADD COLUMN body_hmac text;
CREATE INDEX refusals_refused_at ON refusals (refused_at);
