// The image a container app runs now, so that `azd provision` after a deploy keeps it
// instead of going back to the placeholder (the pattern azd's own templates use).
param exists bool
param name string

resource existingApp 'Microsoft.App/containerApps@2024-03-01' existing = if (exists) {
  name: name
}

output containers array = exists ? existingApp!.properties.template.containers : []
