// Which team pays for a session, and whether its quota has room (issue 18). The choice reads the teams before the
// placement lock; the quota is checked under it, against the live records and reservations in the book, so two
// creates can never both take a team's last slot (the global placement lock already serialises every
// check-and-reserve, so no per-team lock is needed on top). With several control-plane replicas each book sees
// only its own creates: the repository's insert of a charged session then guards the quota in the database
// (team row locked, usage counted, insert, in one transaction: repo.ts).
import type { AgentView } from "../../AgentHub.ts"
import type { User } from "../../Auth.ts"
import type { TeamRecord } from "../../Store.ts"
import type { TeamsShape } from "../../Teams.ts"
import { Effect, Option } from "effect"
import { bytes, chargeOf, chooseTeam, quotaIssue } from "../teams/quota.ts"
import { type Book, SessionsError } from "./book.ts"
import type { Resources } from "@streamspace/protocol"

const unavailable = (e: { readonly message: string }) => new SessionsError({ reason: "Store", message: `teams: ${e.message}` })

/** The team that pays for `user`'s create (undefined: none, the user is in no team), or why none may. */
export const chargedTeam = (
  teams: Option.Option<TeamsShape>,
  user: User,
  request: { readonly team?: string | undefined; readonly template: string; readonly region?: string | undefined }
): Effect.Effect<TeamRecord | undefined, SessionsError> =>
  Option.match(teams, {
    onNone: () =>
      request.team === undefined
        ? Effect.succeed(undefined)
        : Effect.fail(new SessionsError({ reason: "InvalidRequest", field: "team", message: `team: no team named "${request.team}"` })),
    // A user in no group, asking for no team, is charged to none: no need to read the teams.
    onSome: (t) =>
      user.groups.length === 0 && request.team === undefined ? Effect.succeed(undefined) : t.list.pipe(
        Effect.mapError(unavailable),
        Effect.flatMap((all) => {
          const chosen = chooseTeam(all, user.groups, request)
          if ("team" in chosen) return Effect.succeed(chosen.team)
          return Effect.fail(
            chosen.issue.kind === "UnknownTeam"
              ? new SessionsError({ reason: "InvalidRequest", field: "team", message: chosen.issue.message })
              : new SessionsError({ reason: "TeamForbidden", field: "team", message: chosen.issue.message })
          )
        })
      )
  })

/**
 * A create that would make a new home (persistent_home, and its user has no home charged to the team yet) is
 * refused once the team's homes take its storage quota. A home's size is known only once its agent lists it, so
 * this is checked before placement and not reserved: creates racing for a team's last storage can each make a home.
 */
export const storageRefusal = (teams: Option.Option<TeamsShape>, team: TeamRecord | undefined, user: User, persistentHome: boolean) => {
  const quota = team?.quota.storage
  if (team === undefined || quota === undefined || !persistentHome || Option.isNone(teams)) return Effect.void
  return teams.value.homesOf(team).pipe(
    Effect.mapError(unavailable),
    Effect.flatMap((held) =>
      held.users.has(user.id) || held.bytes < bytes(quota)
        ? Effect.void
        : Effect.fail(new SessionsError({
          reason: "QuotaExceeded",
          team: team.name,
          quota: "storage",
          message: `team "${team.name}" has used its home storage quota of ${quota} (its homes take ${held.bytes} bytes): a session with a new persistent home cannot start; delete a home, or start it without persistent_home`
        }))
    )
  )
}

/** The team a session is charged to, as it is now (a resumed session must fit its quota again); undefined: none or deleted. */
export const teamOf = (teams: Option.Option<TeamsShape>, s: { readonly team?: string | undefined }) =>
  s.team === undefined || Option.isNone(teams)
    ? Effect.succeed(undefined)
    : teams.value.get(s.team).pipe(
      Effect.map((t): TeamRecord | undefined => t),
      Effect.catchIf((e) => e.reason === "NotFound", () => Effect.succeed(undefined)),
      Effect.mapError(unavailable)
    )

/** Every live record and reservation of the book. */
export const liveRecords = (book: Book) => [...book.sessions.values(), ...book.reserved.values()]

/** The refusal when one more session asking for `resources` does not fit `team`'s quota (call under the placement lock). */
export const quotaRefusal = (book: Book, team: TeamRecord | undefined, resources: Resources | undefined) => {
  if (team === undefined) return undefined
  const issue = quotaIssue(team, chargeOf(liveRecords(book), team.name), resources)
  return issue === undefined ? undefined : new SessionsError({ reason: "QuotaExceeded", message: issue.message, team: team.name, quota: issue.quota })
}

/** The agents a team's session may be placed on: those in its regions, when it has a list. */
export const teamAgents = (agents: ReadonlyArray<AgentView>, team: TeamRecord | undefined) =>
  team?.regions === undefined ? agents : agents.filter((a) => team.regions!.includes(a.region))
