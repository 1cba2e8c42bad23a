// Auth's error, in its own module so the login modules can raise it (Auth.ts re-exports it).
import { Schema } from "effect"

export class AuthError extends Schema.TaggedError<AuthError>()("AuthError", {
  reason: Schema.Literals(["MissingToken", "InvalidToken", "Expired", "NotYetValid", "Forbidden", "Misconfigured"]),
  message: Schema.String
}) {}
