// The admin's Users page: who has logged in (display name, email, groups, role, last seen), disabled or not,
// with Disable / Enable and Sign out everywhere. The helpers (api, patch, ...) come from app.js.
export function makeUsersPage({ $, api, apiAll, patch, esc, timeAgo, showBanner, refreshSoon, pollMs }) {
  return {
    mount() {
      $("#main").innerHTML = `<h1>Users</h1>
        <p class="muted">Recorded at each login. Disabling a user ends their logins, refuses their tokens and stops their sessions
        (hibernated where they have a persistent home).</p>
        <div id="users" class="table-wrap"></div>`
      $("#users").onclick = async (e) => {
        const btn = e.target.closest("button[data-act]")
        if (!btn) return
        const id = btn.closest("[data-user]").dataset.user
        const act = btn.dataset.act
        if (act === "disable" && !confirm(`Disable ${id}? Their sessions stop and they are signed out.`)) return
        btn.disabled = true
        try {
          const r = await api("POST", `/users/${encodeURIComponent(id)}/${act}`)
          showBanner(act === "sign-out" ? `${id} was signed out of ${r.logins_ended} browser login(s).` : "", "info")
        } catch (err) { showBanner(err.message) }
        refreshSoon(0)
      }
    },
    async refresh() {
      const { users } = await apiAll("/users", "users")
      patch($("#users"), `<table data-testid="users">
        <thead><tr><th>User</th><th>Role</th><th>Groups</th><th>Last seen</th><th>Status</th><th></th></tr></thead>
        <tbody>${users.length === 0 ? `<tr><td colspan="6" class="muted">Nobody has logged in yet.</td></tr>` : ""}
        ${users.map((u) => `<tr data-user="${esc(u.id)}">
          <td data-label="User"><strong>${esc(u.display_name ?? u.id)}</strong><div class="muted small">${esc(u.id)}${u.email ? ` · ${esc(u.email)}` : ""}</div></td>
          <td data-label="Role">${esc(u.role)}</td>
          <td data-label="Groups">${esc(u.groups.join(", ") || "—")}</td>
          <td data-label="Last seen">${u.last_seen_at ? timeAgo(u.last_seen_at) : "never"}</td>
          <td data-label="Status"><span class="badge ${u.disabled ? "error" : "online"}" data-testid="user-status">${u.disabled ? "disabled" : "active"}</span></td>
          <td class="actions"><div>
            ${u.disabled ? `<button class="secondary" data-act="enable">Enable</button>` : `<button class="danger" data-act="disable">Disable</button>`}
            <button class="secondary" data-act="sign-out">Sign out everywhere</button>
          </div></td>
        </tr>`).join("")}
        </tbody></table>`)
      return pollMs
    }
  }
}
