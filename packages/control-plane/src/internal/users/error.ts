// The Users service's error (its own module so internal/users/* can raise it; Users.ts re-exports it).
import { Schema } from "effect"

export class UsersError extends Schema.TaggedError<UsersError>()("UsersError", {
  reason: Schema.Literals(["NotFound", "NotConfigured", "ProviderUnavailable", "LoginFailed", "Forbidden", "Unavailable"]),
  message: Schema.String
}) {}
