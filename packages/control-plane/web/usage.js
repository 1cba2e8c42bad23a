// The admin usage page (#/usage): per team and per user, the sessions holding a pod, the CPU and memory they
// request, hibernated sessions and homes' storage, next to each team's quota (GET /api/v1/usage?by=team|user).
// app.js passes in its API and rendering helpers; this module owns only the page.

const UNITS = [["Ti", 2 ** 40], ["Gi", 2 ** 30], ["Mi", 2 ** 20], ["Ki", 2 ** 10]]

/** Bytes as the largest binary unit that keeps a value of at least 1 (`1.5Gi`, `512Mi`). */
export function formatBytes(n) {
  for (const [unit, size] of UNITS) if (n >= size) return `${+(n / size).toFixed(2)}${unit}`
  return `${n}B`
}

/** CPU cores without float noise (`1.75`). */
export const formatCores = (n) => `${+n.toFixed(3)}`

export function usagePage({ api, esc, patch, $ }) {
  // Every row of one view of GET /usage, page after page.
  async function all(by) {
    const rows = []
    let cursor = null
    do {
      const page = await api("GET", `/usage?by=${by}&limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`)
      rows.push(...page.usage)
      cursor = page.next_cursor ?? null
    } while (cursor)
    return rows
  }
  const of = (used, quota) => (quota === null || quota === undefined ? esc(used) : `${esc(used)} <span class="muted">/ ${esc(quota)}</span>`)
  return {
    mount() {
      $("#main").innerHTML = `
        <h1>Usage</h1>
        <p class="muted">Sessions holding a pod and the CPU and memory they request, hibernated sessions, and the storage of homes,
        per team (with its quota) and per user. Sessions of users in no team count under <code>none</code>.</p>
        <h2>By team</h2><div id="usage-teams" class="table-wrap"></div>
        <h2>By user</h2><div id="usage-users" class="table-wrap"></div>`
    },
    async refresh() {
      const [teams, users] = await Promise.all([all("team"), all("user")])
      patch($("#usage-teams"), `<table data-testid="usage-teams">
        <thead><tr><th>Team</th><th>Sessions</th><th>CPU</th><th>Memory</th><th>Hibernated</th><th>Homes</th><th>Home storage</th></tr></thead>
        <tbody>${teams.map((t) => `<tr data-team="${esc(t.team)}">
          <td>${esc(t.team)}</td>
          <td data-col="sessions">${of(t.sessions, t.quota?.max_sessions)}</td>
          <td data-col="cpu">${of(formatCores(t.cpu_cores), t.quota?.cpu)}</td>
          <td data-col="memory">${of(formatBytes(t.memory_bytes), t.quota?.memory)}</td>
          <td data-col="hibernated">${esc(t.hibernated)}</td>
          <td data-col="homes">${esc(t.homes)}</td>
          <td data-col="storage">${of(formatBytes(t.storage_bytes), t.quota?.storage)}</td>
        </tr>`).join("")}</tbody></table>`)
      patch($("#usage-users"), users.length === 0 ? `<p class="muted" data-testid="usage-users-empty">Nobody has a session or a home.</p>` : `<table data-testid="usage-users">
        <thead><tr><th>User</th><th>Sessions</th><th>CPU</th><th>Memory</th><th>Hibernated</th><th>Homes</th><th>Home storage</th></tr></thead>
        <tbody>${users.map((u) => `<tr data-user="${esc(u.user_id)}">
          <td>${esc(u.user_id)}</td>
          <td data-col="sessions">${esc(u.sessions)}</td>
          <td data-col="cpu">${esc(formatCores(u.cpu_cores))}</td>
          <td data-col="memory">${esc(formatBytes(u.memory_bytes))}</td>
          <td data-col="hibernated">${esc(u.hibernated)}</td>
          <td data-col="homes">${esc(u.homes)}</td>
          <td data-col="storage">${esc(formatBytes(u.storage_bytes))}</td>
        </tr>`).join("")}</tbody></table>`)
      return 5000
    }
  }
}
