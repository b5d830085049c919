package rules

import (
	"reflect"
	"testing"

	"maunium.net/go/mautrix/id"
)

func TestChange_UpdateSortsEntriesByListAndAction(t *testing.T) {
	tests := []struct {
		name   string
		change Change
		want   Update
	}{
		{"no entries keep the version and pushes", Change{Version: 3, PushTo: []id.UserID{"@a:x"}}, Update{Version: 3, PushTo: []id.UserID{"@a:x"}}},
		{"each entry lands in its list and action", Change{Version: 4, Entries: []Entry{
			{AlwaysSend, "@dash:x", Add}, {AlwaysSend, "@old:x", Remove}, {Blacklist, "@bot-*:x", Add}, {Blacklist, "@ceo:x", Remove},
		}}, Update{Version: 4, AddAlwaysSend: []id.UserID{"@dash:x"}, RemoveAlwaysSend: []id.UserID{"@old:x"}, AddBlacklist: []id.UserID{"@bot-*:x"}, RemoveBlacklist: []id.UserID{"@ceo:x"}}},
		{"push to all and omitted entries carry over", Change{Version: 5, PushToAll: true, EntriesOmitted: true}, Update{Version: 5, PushToAllAlwaysSend: true, EntriesOmitted: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.change.Update(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestList_StringIsHowUsersTypeIt(t *testing.T) {
	for list, want := range map[List]string{AlwaysSend: "always-send", Blacklist: "blacklist"} {
		if got := list.String(); got != want {
			t.Errorf("%q: got %q, want %q", list, got, want)
		}
	}
}
